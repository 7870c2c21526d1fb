"""What Kubernetes does to workers, done to real ones: every task ends once, none is lost.

Each test counts, from the processor's own call log, the calls per request and the most
calls running at once, across processes. Time bounds are liveness bounds, generous for
a loaded two-core machine, except where the bound is the promise itself (recovery
within the lease plus 2 s).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from django.db import connection

from tasks_app.errors import SchedulerClosed
from tasks_app.interfaces import TaskStatus
from tasks_app.models import TaskEvent, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import (
    Call,
    Cluster,
    RedisServer,
    task_request,
    wait_process_gone,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 3.0  # the cluster fixture's SCHEDULER_LEASE_SECONDS


def statuses() -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in TaskRecord.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def wait_all_finished(uuids: list[str], timeout: float, cluster: Cluster) -> None:
    def finished() -> bool:
        return TaskRecord.objects.filter(
            uuid__in=uuids, status__in=["done", "error"]
        ).count() == len(uuids)

    try:
        wait_until(
            finished, timeout, interval=0.25, message=f"{len(uuids)} tasks to finish"
        )
    except AssertionError:
        raise AssertionError(f"{statuses()}\n{cluster.logs()}") from None


def describe_overlap(calls: list[Call]) -> str:
    rows = TaskRecord.objects.filter(hash__in=[call.hash for call in calls])
    by_hash = {row.hash: row for row in rows}
    return "\n".join(
        f"pid {call.pid} {call.start:.6f}..{call.end} {by_hash[call.hash].worker} "
        f"started {by_hash[call.hash].started_at} finished {by_hash[call.hash].finished_at}"
        for call in calls
    )


def processing_owners() -> list[tuple[str, str]]:
    return list(
        TaskRecord.objects.filter(status="processing").values_list(
            "hash", "lease_owner"
        )
    )


def assert_each_done_once(cluster: Cluster, uuids: list[str]) -> None:
    rows = TaskRecord.objects.filter(uuid__in=uuids)
    assert {row.status for row in rows} == {"done"}, statuses()
    calls = cluster.call_log.calls_per_hash()
    assert {row.hash for row in rows} == set(calls)
    doubled = {digest: n for digest, n in calls.items() if n != 1}
    assert doubled == {}


def test_cap_holds_across_three_workers_whose_concurrency_exceeds_it(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=2)
    for _ in range(3):
        cluster.start_worker(concurrency=3)
    uuids = [scheduler.add_task(task_request(id=i, sleep=0.02)) for i in range(500)]

    wait_all_finished(uuids, 240, cluster)

    assert_each_done_once(cluster, uuids)
    overlap = cluster.call_log.overlapping(2)
    assert overlap == [], describe_overlap(overlap)
    assert cluster.call_log.peak_concurrency() == 2


def _kill_when_two_process(cluster: Cluster) -> tuple[float, list[str]]:
    wait_until(
        lambda: len(processing_owners()) == 2, 60, message="two tasks processing"
    )
    wait_until(
        lambda: len(cluster.call_log.calls()) >= 2, 30, message="two calls started"
    )
    return time.time(), [digest for digest, _ in processing_owners()]


def _restart_delays(
    cluster: Cluster, killed: list[str], killed_at: float
) -> list[float]:
    delays = []
    for digest in killed:
        starts = sorted(
            call.start for call in cluster.call_log.calls() if call.hash == digest
        )
        assert len(starts) == 2, f"{digest} started {len(starts)} times"
        delays.append(starts[1] - killed_at)
    return delays


def test_pool_child_killed_mid_task_runs_again_at_once(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    worker = cluster.start_worker(concurrency=2)
    uuids = [scheduler.add_task(task_request(id=i, sleep=4)) for i in range(6)]
    killed_at, _ = _kill_when_two_process(cluster)
    victim_hash, owner = processing_owners()[0]
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)  # what the OOM killer does

    wait_all_finished(uuids, 120, cluster)

    rows = TaskRecord.objects.filter(uuid__in=uuids)
    assert {row.status for row in rows} == {"done"}
    calls = cluster.call_log.calls_per_hash()
    assert calls.pop(victim_hash) == 2
    assert set(calls.values()) == {1}
    [delay] = _restart_delays(cluster, [victim_hash], killed_at)
    assert delay <= LEASE_SECONDS + 2, f"ran again {delay:.1f} s after the kill"
    assert TaskRecord.objects.get(hash=victim_hash).attempts == 2
    assert TaskEvent.objects.filter(
        task__hash=victim_hash, event="lease_expired"
    ).exists()
    assert worker.process.poll() is None


def test_worker_killed_whole_comes_back_on_another_worker(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    doomed = cluster.start_worker(concurrency=2, name="doomed")
    uuids = [scheduler.add_task(task_request(id=i, sleep=4)) for i in range(6)]
    killed_at, killed = _kill_when_two_process(cluster)
    doomed.kill()  # SIGKILL to the whole process group: the pod is gone
    survivor = cluster.start_worker(concurrency=2, name="fresh", wait=False)

    wait_all_finished(uuids, 120, cluster)

    rows = TaskRecord.objects.filter(uuid__in=uuids)
    assert {row.status for row in rows} == {"done"}
    calls = cluster.call_log.calls_per_hash()
    assert all(calls.pop(digest) == 2 for digest in killed)
    assert set(calls.values()) == {1}
    # Both killed tasks and the four never started ran on the new worker.
    assert {row.worker.split()[0] for row in rows} == {
        survivor.name + "@" + os.uname().nodename
    }
    delays = _restart_delays(cluster, killed, killed_at)
    # The new worker needs a few seconds to boot on top of the lease.
    assert max(delays) <= LEASE_SECONDS + 2 + 10, delays


def test_recovery_by_a_surviving_replica_is_within_the_lease_plus_two_seconds(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=2)
    doomed = cluster.start_worker(concurrency=1, name="doomed")
    cluster.start_worker(concurrency=1, name="survivor")
    uuids = [scheduler.add_task(task_request(id=i, sleep=5)) for i in range(2)]
    wait_until(lambda: len(cluster.call_log.calls()) == 2, 60, message="both started")
    doomed_pids = {doomed.pid, *doomed.children()}
    [(victim, _)] = [
        (digest, owner)
        for digest, owner in processing_owners()
        if int(owner.rsplit(":", 1)[1]) in doomed_pids
    ]
    killed_at = time.time()
    doomed.kill()

    wait_all_finished(uuids, 60, cluster)

    [delay] = _restart_delays(cluster, [victim], killed_at)
    assert delay <= LEASE_SECONDS + 2, f"ran again {delay:.1f} s after the kill"
    assert {row.status for row in TaskRecord.objects.all()} == {"done"}


def test_rolling_restarts_under_load_lose_nothing_and_repeat_nothing(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=4)
    worker = cluster.start_worker(concurrency=2)
    uuids: list[str] = []

    def produce() -> None:
        for i in range(120):
            uuids.append(scheduler.add_task(task_request(id=f"rolling {i}", sleep=0.3)))
            time.sleep(0.05)  # 20 per second
        connection.close()

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in range(8):
        time.sleep(1.5)
        worker.terminate()
        assert worker.wait(60) == 0, worker.log_tail()
        worker = cluster.start_worker(concurrency=2)
    producer.join()

    wait_all_finished(uuids, 180, cluster)
    assert len(uuids) == 120
    assert_each_done_once(cluster, uuids)
    assert TaskRecord.objects.filter(status="error").count() == 0


@pytest.mark.parametrize("fault", ["flushall", "restart"])
def test_broker_that_forgets_loses_nothing(
    cluster: Cluster, scheduler: Scheduler, redis_server: RedisServer, fault: str
) -> None:
    worker = cluster.start_worker(concurrency=2)
    uuids = [
        scheduler.add_task(task_request(id=f"{fault} {i}", sleep=1)) for i in range(15)
    ]
    wait_until(lambda: len(processing_owners()) == 2, 60, message="two processing")
    if fault == "flushall":
        redis_server.flushall()
    else:
        redis_server.restart(down_seconds=1.0)

    wait_all_finished(uuids, 120, cluster)
    assert_each_done_once(cluster, uuids)

    # The same worker, never restarted, still consumes new messages.
    later = [
        scheduler.add_task(task_request(id=f"after {fault} {i}")) for i in range(3)
    ]
    wait_all_finished(later, 60, cluster)
    assert worker.process.poll() is None
    assert TaskRecord.objects.filter(status="done").count() == 18


def test_close_during_load_refuses_new_and_finishes_accepted(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.start_worker(concurrency=2)
    accepted = [
        scheduler.add_task(task_request(id=f"before {i}", sleep=0.3)) for i in range(20)
    ]
    wait_until(lambda: statuses().get("done", 0) >= 2, 60, message="some done")

    state = scheduler.close()
    assert state.closed and state.state == "draining"
    for i in range(5):
        with pytest.raises(SchedulerClosed):
            scheduler.add_task(task_request(id=f"after close {i}"))
    assert TaskRecord.objects.count() == 20

    assert scheduler.wait_drained(120), statuses()
    assert scheduler.state().state == "drained"
    assert_each_done_once(cluster, accepted)


def test_poison_request_ends_in_error_after_max_attempts(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_max_attempts=3)
    worker = cluster.start_worker(concurrency=2)
    poison = scheduler.add_task(task_request(kill=True))
    others = [scheduler.add_task(task_request(id=i, sleep=0.2)) for i in range(10)]

    wait_all_finished([poison, *others], 120, cluster)

    task = scheduler.get_task(poison)
    assert task.status == TaskStatus.ERROR
    assert "3 times" in task.error and "SCHEDULER_MAX_ATTEMPTS=3" in task.error
    assert cluster.call_log.calls_per_hash()[task.hash] == 3
    assert {scheduler.get_task(uuid).status for uuid in others} == {TaskStatus.DONE}
    assert worker.process.poll() is None


def test_task_longer_than_visibility_timeout_and_lease_runs_once(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(
        celery_broker_transport_options=json.dumps(
            {
                "visibility_timeout": 2,
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
            }
        )
    )
    cluster.start_worker(concurrency=2, name="a")
    cluster.start_worker(concurrency=2, name="b")
    long = scheduler.add_task(task_request(id="long", sleep=3 * LEASE_SECONDS + 1))

    wait_all_finished([long], 60, cluster)

    task = scheduler.get_task(long)
    assert task.status == TaskStatus.DONE and task.attempts == 1
    assert cluster.call_log.calls_per_hash() == {task.hash: 1}
    # The broker did hand the message out again meanwhile: the claim ran nothing.
    full_logs = "".join(w.log_path.read_text() for w in cluster.workers)
    assert full_logs.count(f"run_task[{long}] received") >= 2


def test_status_comes_from_our_table_not_the_broker(
    cluster: Cluster, scheduler: Scheduler, redis_server: RedisServer
) -> None:
    uuid = scheduler.add_task(task_request(id="table", sleep=3))
    assert scheduler.get_task(uuid).status == TaskStatus.QUEUED
    with pytest.raises(LookupError):
        scheduler.get_task("0b5e3a52-1a4f-4a5e-9d43-3c6b2f7f0c11")

    cluster.start_worker(concurrency=1)
    wait_until(
        lambda: scheduler.get_task(uuid).status == TaskStatus.PROCESSING,
        30,
        message="processing",
    )
    wait_all_finished([uuid], 60, cluster)
    redis_server.flushall()

    assert scheduler.get_task(uuid).status == TaskStatus.DONE
    status, result = scheduler.storage.get_result(uuid)
    assert status == TaskStatus.DONE
    assert result == b"result:" + task_request(id="table", sleep=3)


def test_idle_worker_takes_short_tasks_while_another_runs_a_long_one(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=2)
    cluster.start_worker(concurrency=1, name="one")
    cluster.start_worker(concurrency=1, name="two")
    long = scheduler.add_task(task_request(id="A", sleep=20))
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="A started")
    submitted = time.time()
    short = [scheduler.add_task(task_request(id=name, sleep=1)) for name in ("B", "C")]

    wait_all_finished(short, 30, cluster)

    starts = sorted(call.start for call in cluster.call_log.calls()[1:])
    assert starts[0] - submitted <= 2, starts
    assert starts[1] - submitted <= 4, starts
    assert scheduler.get_task(long).status == TaskStatus.PROCESSING


def test_pool_children_die_with_their_worker_main_process(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=1)
    doomed = cluster.start_worker(concurrency=1, name="doomed")
    uuid = scheduler.add_task(task_request(id="orphaned", sleep=60))
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="first call")
    [first] = cluster.call_log.calls()
    cluster.start_worker(concurrency=1, name="survivor")
    assert cluster.call_log.still_running(first), "the kill must come mid-call"

    os.kill(doomed.pid, signal.SIGKILL)  # the main process only, not its group
    orphan_gone_at = wait_process_gone(first.pid, 5, "the orphaned child to end")

    wait_until(lambda: len(cluster.call_log.calls()) == 2, 30, message="the retry")
    second = cluster.call_log.calls()[1]
    assert second.start > orphan_gone_at
    row = TaskRecord.objects.get(uuid=uuid)
    assert row.attempts == 2 and row.worker.startswith("survivor@")
    cluster.kill()


def test_frozen_worker_resumed_after_its_lease_stops_its_stale_call(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=1)
    frozen = cluster.start_worker(concurrency=1, name="frozen")
    uuid = scheduler.add_task(task_request(id="frozen", sleep=60))
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="first call")
    [first] = cluster.call_log.calls()
    cluster.start_worker(concurrency=1, name="thawed-out")
    assert cluster.call_log.still_running(first), "the freeze must come mid-call"

    os.killpg(frozen.pid, signal.SIGSTOP)  # a paused VM, a stuck node
    wait_until(lambda: len(cluster.call_log.calls()) == 2, 30, message="the retry")
    os.killpg(frozen.pid, signal.SIGCONT)
    resumed_at = time.time()
    stopped_at = wait_process_gone(first.pid, 5, "the stale call to be stopped")
    assert stopped_at - resumed_at < 2

    row = TaskRecord.objects.get(uuid=uuid)
    assert row.status == "processing" and row.attempts == 2
    assert row.worker.startswith("thawed-out@")
    assert frozen.process.poll() is None, "the worker itself goes on"
    cluster.kill()
