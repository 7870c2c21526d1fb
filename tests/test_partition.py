"""A worker cut off from the database must stop its processor before the task's lease
lapses, so that the retry elsewhere never runs beside it: the cap holds in a partition."""

from __future__ import annotations

import psutil
import pytest

from tasks_app.interfaces import TaskStatus
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import (
    Cluster,
    TcpProxy,
    task_request,
    wait_process_gone,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_worker_cut_off_from_the_database_stops_before_its_task_runs_elsewhere(
    cluster: Cluster, scheduler: Scheduler, live_database_url: str
) -> None:
    cluster.configure(scheduler_num_workers=1)
    proxy = TcpProxy(5432)
    proxy.start()
    direct_env = dict(cluster.env)
    cluster.env["DATABASE_URL"] = live_database_url.replace(":5432/", f":{proxy.port}/")
    cut_off = cluster.start_worker(concurrency=1, name="cutoff")
    cluster.env = direct_env

    uuid = scheduler.add_task(task_request(id="partitioned", sleep=15))
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="first call")
    [first] = cluster.call_log.calls()
    assert psutil.pid_exists(first.pid)
    cluster.start_worker(concurrency=1, name="healthy")

    proxy.cut()
    stopped_at = wait_process_gone(
        first.pid, 20, "the cut-off worker to stop its processor"
    )

    wait_until(lambda: len(cluster.call_log.calls()) == 2, 30, message="the retry")
    second = cluster.call_log.calls()[1]
    assert second.start > stopped_at, "the retry began while the first call still ran"

    proxy.restore()
    wait_until(
        lambda: scheduler.get_task(uuid).status == TaskStatus.DONE, 60, message="done"
    )
    row = TaskRecord.objects.get(uuid=uuid)
    assert row.attempts == 2
    assert row.worker.startswith("healthy@")
    assert cut_off.process.poll() is None, "the worker itself lives on"
    proxy.cut()
