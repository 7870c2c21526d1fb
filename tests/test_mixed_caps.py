"""Workers that disagree on SCHEDULER_NUM_WORKERS: each claim counts against the cap of
the process making it, so the largest wins, and a worker with a smaller one says so."""

from __future__ import annotations

import time

import pytest

from tasks_app.scheduler import Scheduler
from tests.harness import Cluster, task_request, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

OVER_CAP = "over this worker's SCHEDULER_NUM_WORKERS=1"


def test_a_worker_with_a_smaller_cap_logs_that_the_cluster_runs_over_it(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=3)
    cluster.start_worker(concurrency=3, name="wide")
    for i in range(3):
        scheduler.add_task(task_request(id=i, sleep=60))
    wait_until(lambda: len(cluster.call_log.calls()) == 3, 30, message="three calls")

    cluster.configure(scheduler_num_workers=1)
    narrow = cluster.start_worker(concurrency=1, name="narrow")
    scheduler.add_task(task_request(id="for the narrow worker", sleep=60))

    def narrow_logged() -> bool:
        return OVER_CAP in narrow.log_path.read_text(errors="replace")

    wait_until(narrow_logged, 20, message="the narrow worker's over-cap error")
    log = narrow.log_path.read_text(errors="replace")
    assert "3 tasks are processing in the cluster" in log, narrow.log_tail()
    # Its own cap holds for what it claims: it runs nothing beside the three.
    time.sleep(2)
    assert len(cluster.call_log.calls()) == 3
    # One error a minute, not one a tick.
    assert log.count(OVER_CAP) == 1
    cluster.kill()  # the calls would run a minute more
