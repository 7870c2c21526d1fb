"""Closing in the middle of a burst of submissions from many processes.

test_admission and test_replicas close first and submit after; here the close lands
while 16 clients in 4 processes are admitting: every admission decided after the close
must be refused, and nothing refused may leave a row.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from tasks_app.models import SchedulerSwitch, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import Cluster, submit_from_processes, task_request

pytestmark = pytest.mark.django_db(transaction=True)

START_DELAY_SECONDS = 3.0


def test_close_in_the_middle_of_a_burst_refuses_every_later_admission(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    requests = [task_request(id=f"burst {i}") for i in range(40)]

    def close_mid_burst() -> None:
        # After the first admissions, whenever the submitters got going: a fixed delay
        # missed the burst on a loaded machine, where they take long to start.
        deadline = time.monotonic() + 120
        while TaskRecord.objects.count() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.close()
        connection.close()

    closer = threading.Thread(target=close_mid_burst)
    closer.start()
    answers = submit_from_processes(
        cluster.env, requests, processes=4, threads=4, start_delay=START_DELAY_SECONDS
    )
    closer.join()

    admitted = {str(answer["uuid"]) for answer in answers if "uuid" in answer}
    refused = [answer for answer in answers if "error" in answer]
    assert {answer["error"] for answer in refused} <= {"closed"}, refused[:3]
    assert admitted and refused, "the close did not land inside the burst"

    closed_at = SchedulerSwitch.objects.get(pk=1).changed_at
    assert closed_at is not None
    rows = TaskRecord.objects.values_list("uuid", "created_at")
    # A row for every UUID answered and no other: nothing refused left a row.
    assert {str(uuid) for uuid, _ in rows} == admitted
    # Each admission was decided before the close committed.
    assert max(created_at for _, created_at in rows) < closed_at
    assert scheduler.state().state == "draining"
