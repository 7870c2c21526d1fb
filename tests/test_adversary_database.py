"""A PostgreSQL restart under running workers: every task still ends once, and soon.

``pg_terminate_backend`` on every connection of the test database but the test's own
is what a restart or a failover of PostgreSQL does to the workers' open connections.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from tasks_app.interfaces import TaskStatus
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import Cluster, task_request, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# One renewal every keeper tick (the lease is the shortest the settings allow: four
# ticks), so that the keeper always renews before it recovers, as it does one tick in
# four with the defaults (lease 15 s, tick 1 s) and one in two with the harness's.
LEASE_SECONDS = 3.0
RECONCILE_INTERVAL = 0.75


def terminate_other_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (terminated,) = cursor.fetchone()
    return int(terminated)


def test_task_whose_connection_dropped_while_it_ran_ends_done_not_at_the_time_limit(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(
        scheduler_num_workers=1,
        scheduler_lease_seconds=LEASE_SECONDS,
        scheduler_reconcile_interval=RECONCILE_INTERVAL,
        scheduler_task_time_limit=40,
    )
    cluster.start_worker(concurrency=1)
    uuid = scheduler.add_task(task_request(id="outlives its connection", sleep=3)).uuid
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="the call")

    assert terminate_other_connections() >= 1
    wait_until(
        lambda: cluster.call_log.calls()[0].end is not None, 30, message="call ends"
    )
    call_ended_at = time.time()

    # The result could not be written on the dropped connection: the task must go
    # back to the queue at once and run again (or have its result written on a new
    # connection), not keep its slot.
    try:
        wait_until(
            lambda: scheduler.get_task(uuid).status.is_finished,
            LEASE_SECONDS + 2 + 5,
            message="the task to finish",
        )
    except AssertionError:
        row = TaskRecord.objects.get(uuid=uuid)
        raise AssertionError(
            f"{time.time() - call_ended_at:.1f} s after its call ended the task is "
            f"{row.status} (attempt {row.attempts}), its lease renewed to "
            f"{row.lease_expires_at}\n{cluster.logs()}"
        ) from None
    task = scheduler.get_task(uuid)
    assert task.status == TaskStatus.DONE, task.error
