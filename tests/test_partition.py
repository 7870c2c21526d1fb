"""A worker cut off from the database must stop its processor before the task's lease
lapses, so that the retry elsewhere never runs beside it: the cap holds in a partition."""

from __future__ import annotations

import itertools
import time

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

    uuid = scheduler.add_task(task_request(id="partitioned", sleep=60))
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="first call")
    [first] = cluster.call_log.calls()
    cluster.start_worker(concurrency=1, name="healthy")
    assert cluster.call_log.still_running(first), "the cut must come mid-call"

    proxy.cut()
    stopped_at = wait_process_gone(
        first.pid, 20, "the cut-off worker to stop its processor"
    )

    wait_until(lambda: len(cluster.call_log.calls()) == 2, 30, message="the retry")
    second = cluster.call_log.calls()[1]
    assert second.start > stopped_at, "the retry began while the first call still ran"

    proxy.restore()
    row = TaskRecord.objects.get(uuid=uuid)
    assert row.status == TaskStatus.PROCESSING and row.attempts == 2
    assert row.worker.startswith("healthy@")
    wait_until(
        lambda: cut_off.heartbeat.stat().st_mtime > time.time() - 2,
        30,
        message="the cut-off worker's keeper to tick again",
    )
    assert cut_off.process.poll() is None, "the worker itself lives on"
    cluster.kill()
    proxy.cut()


def test_a_worker_cut_off_from_the_database_gives_wake_ups_back_and_pauses(
    cluster: Cluster, scheduler: Scheduler, live_database_url: str
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    cluster.env["DATABASE_URL"] = live_database_url.replace(":5432/", f":{proxy.port}/")
    cut_off = cluster.start_worker(concurrency=1, name="cutoff")
    proxy.cut()
    # Queued while no worker can reach it: the one wake-up is the only message.
    uuid = scheduler.add_task(task_request(id="waits for a reachable worker"))

    def gave_back() -> list[float]:
        lines = [
            line
            for line in cut_off.log_path.read_text(errors="replace").splitlines()
            if f"task {uuid}: cannot reach the database to claim it" in line
        ]
        return [
            time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            + int(line[20:23]) / 1000
            for line in lines
        ]

    # Taken, given back, taken again by the same worker (the only consumer): the
    # message is not dropped, and each round waits for the pause.
    wait_until(lambda: len(gave_back()) >= 3, 30, message="three rounds of the wake-up")
    times = gave_back()
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times))
    assert TaskRecord.objects.get(uuid=uuid).status == TaskStatus.QUEUED
    proxy.restore()
    wait_until(
        lambda: TaskRecord.objects.get(uuid=uuid).status == TaskStatus.DONE,
        30,
        message="the task to run once the database is reachable",
    )
    cluster.kill()
    proxy.cut()
