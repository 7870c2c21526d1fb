"""Workers in states the fault tests do not reach: frozen in part, or in another pool.

The lease keeper in a worker's main process is what stops a call whose task must run
elsewhere (a lease about to lapse, a time limit). These tests take that power away from
it without killing the worker, and count the calls running at once across processes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid as uuid_module

import psutil
import psycopg
import pytest
from django.utils import timezone

from tasks_app import dispatch, leases
from tasks_app.interfaces import TaskStatus
from tasks_app.models import Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import Call, Cluster, TcpProxy, task_request, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def running(call: Call) -> bool:
    if call.end is not None:
        return False
    try:
        return psutil.Process(call.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_call_of_a_worker_whose_main_process_is_stopped_never_runs_beside_its_retry(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=1)
    stuck = cluster.start_worker(concurrency=1, name="stuck")
    uuid = scheduler.add_task(task_request(id="main process stopped", sleep=10)).uuid
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="first call")
    # Only now, so that the first call is the stuck worker's.
    cluster.start_worker(concurrency=1, name="healthy")

    # The main process alone: its keeper and fence threads stop, its pool goes on, and
    # only the pool process's own watchdog (tasks_app/pool_watchdog.py) can stop the call.
    os.kill(stuck.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: len(cluster.call_log.calls()) == 2, 30, message="the retry")
        first, retry = cluster.call_log.calls()
        first_running_at_retry = running(first)
    finally:
        os.kill(stuck.pid, signal.SIGCONT)

    assert not first_running_at_retry, (
        f"the retry (pid {retry.pid}) started while the first call (pid {first.pid}) "
        "still ran: two calls at once with SCHEDULER_NUM_WORKERS=1"
    )
    wait_until(
        lambda: scheduler.get_task(uuid).status == TaskStatus.DONE, 60, message="done"
    )


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_hung_call_in_a_pool_without_processes_never_runs_beside_the_next_task(
    cluster: Cluster, scheduler: Scheduler, pool: str
) -> None:
    cluster.configure(scheduler_num_workers=1, scheduler_task_time_limit=2)
    odd = cluster.start_worker(concurrency=1, name="odd", pool=pool, wait=False)
    try:
        odd.wait_ready()
    except AssertionError:
        # Refusing to start keeps the promise too, if the worker says why.
        assert odd.process.poll() not in (None, 0), odd.log_tail()
        refusals = [
            line
            for line in odd.log_tail(80).splitlines()
            if "CRITICAL" in line and pool in line
        ]
        assert refusals, odd.log_tail(80)
        return
    hung = scheduler.add_task(task_request(hang=True)).uuid
    wait_until(
        lambda: scheduler.get_task(hung).status.is_finished, 30, message="time limit"
    )
    cluster.start_worker(concurrency=1, name="prefork")
    after = scheduler.add_task(task_request(id="after the hang", sleep=1)).uuid
    wait_until(
        lambda: scheduler.get_task(after).status.is_finished, 30, message="the next"
    )

    first, second = cluster.call_log.calls()
    assert scheduler.get_task(hung).status == TaskStatus.ERROR
    assert not running(first), (
        f"the hung call (pid {first.pid}) still runs after its task was marked error "
        f"with 'was stopped', beside the next one (pid {second.pid})"
    )


# A keeper tick long enough that the cut below lands between a claim and the tick that
# would have shown the keeper its new lease (the cut follows the call's start by
# milliseconds; a tick falls inside that gap about once in a hundred runs).
SLOW_TICK_SECONDS = 3.0
SLOW_TICK_LEASE_SECONDS = 4 * SLOW_TICK_SECONDS


def test_call_claimed_just_before_a_partition_never_runs_beside_its_retry(
    cluster: Cluster, scheduler: Scheduler, live_database_url: str
) -> None:
    cluster.configure(
        scheduler_num_workers=1,
        scheduler_reconcile_interval=SLOW_TICK_SECONDS,
        scheduler_lease_seconds=SLOW_TICK_LEASE_SECONDS,
    )
    proxy = TcpProxy(5432)
    proxy.start()
    direct_env = dict(cluster.env)
    cluster.env["DATABASE_URL"] = live_database_url.replace(":5432/", f":{proxy.port}/")
    cluster.start_worker(concurrency=1, name="cutoff")
    cluster.env = direct_env
    try:
        uuid = scheduler.add_task(task_request(id="claimed, then cut", sleep=40)).uuid
        wait_until(
            lambda: len(cluster.call_log.calls()) == 1,
            30,
            interval=0.005,
            message="the first call",
        )
        proxy.cut()
        cluster.start_worker(concurrency=1, name="healthy")

        wait_until(lambda: len(cluster.call_log.calls()) == 2, 60, message="the retry")
        first, retry = cluster.call_log.calls()
        assert not running(first), (
            f"the retry (pid {retry.pid}) started while the cut-off call (pid "
            f"{first.pid}) still ran: two calls at once with SCHEDULER_NUM_WORKERS=1"
        )
        wait_until(
            lambda: scheduler.get_task(uuid).status == TaskStatus.DONE,
            60,
            message="done",
        )
    finally:
        proxy.cut()


def queued_without_a_message(request: bytes) -> str:
    uuid = uuid_module.uuid4()
    TaskRecord.objects.create(
        uuid=uuid,
        hash=hashlib.sha256(request).hexdigest(),
        request=request,
        request_size=len(request),
        created_at=timezone.now(),
        dispatched_at=timezone.now(),
        status=Status.QUEUED,
    )
    return str(uuid)


@pytest.mark.parametrize(
    ("lock_wait", "freeze"),
    [
        # Long enough for a keeper renewal of another task to happen during the wait.
        (2.4, True),
        # Almost the whole lease (3 s here), with the worker left alone.
        (2.9, False),
    ],
)
def test_a_claim_that_waited_for_the_slot_lock_never_runs_beside_its_retry(
    cluster: Cluster,
    scheduler: Scheduler,
    live_database_url: str,
    lock_wait: float,
    freeze: bool,
) -> None:
    """A lease runs from when its task started, and only renewals that saw it count.

    The claim of B waits on the slot lock while the keeper renews A. B's lease once ran
    from the claim's statement start, so the wait came out of it; and the pool
    process counted that renewal of A as one of B's.
    """
    cluster.configure(scheduler_num_workers=3)
    worker = cluster.start_worker(concurrency=2, name="waited")
    scheduler.add_task(task_request(id="keeps the keeper renewing", sleep=40))
    wait_until(lambda: len(cluster.call_log.calls()) == 1, 30, message="first call")
    late = queued_without_a_message(task_request(id="waited for the lock", sleep=20))
    url = live_database_url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as spy:
        holder.execute("SELECT 1 FROM scheduler_slot_lock WHERE id = 1 FOR UPDATE")
        dispatch.publish([late])
        wait_until(
            lambda: (
                spy.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%%scheduler_claim(%%'"
                ).fetchone()
                is not None
            ),
            20,
            interval=0.01,
            message="the claim to wait for the slot lock",
        )
        time.sleep(lock_wait)
        holder.rollback()
    wait_until(
        lambda: len(cluster.call_log.calls()) == 2, 10, interval=0.005, message="B"
    )
    first = cluster.call_log.calls()[1]
    if freeze:
        os.kill(worker.pid, signal.SIGSTOP)
    try:
        # Another worker, as eager as can be: it takes B the moment its lease lapses.
        retry = None
        deadline = time.monotonic() + 15
        while retry is None and time.monotonic() < deadline and running(first):
            leases.recover_expired(5)
            retry = leases.claim(late, worker="other", num_workers=3, lease_seconds=60)
            time.sleep(0.02)
        assert retry is None or not running(first), (
            f"task {late}: attempt {retry.attempt} started elsewhere while pid "
            f"{first.pid} still ran attempt 1\n{cluster.logs()}"
        )
    finally:
        if freeze:
            os.kill(worker.pid, signal.SIGCONT)
