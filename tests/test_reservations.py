"""Reservations: with every slot busy, a slot holds its next task and starts it at once.

The functions (migration 0006) are tested in this process, as a worker calls them; the
run-ahead and the lapse of a reservation behind a long task with real workers.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection, connections
from django.utils import timezone

from tasks_app import db_thread, leases, runner, sql
from tasks_app.models import Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import Cluster, RedisServer, hold_slot, task_request, wait_until
from tests.test_faults import assert_each_done_once, describe_overlap
from tests.test_slot_functions import message_ids, new_messages, status

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
DONE = leases.Outcome(Status.DONE, result=b"ok")


def claim(uuid: str | None, reserve_seconds: float = 5.0) -> leases.Claim | None:
    return leases.claim(
        uuid,
        worker="test",
        num_workers=2,
        lease_seconds=60,
        reserve_seconds=reserve_seconds,
    )


def finish(
    held: leases.Claim, take_next: bool = True, reserve_seconds: float = 5.0
) -> leases.Claim | None:
    return leases.finish(
        held,
        DONE,
        take_next=take_next,
        worker="test",
        lease_seconds=60,
        num_workers=2,
        reserve_seconds=reserve_seconds,
    )


def reservation_of(uuid: str) -> tuple[str, str, float | None]:
    """(status, lease_owner, seconds until lease_expires_at) of a task."""
    row = TaskRecord.objects.get(uuid=uuid)
    left = None
    if row.lease_expires_at is not None:
        left = (row.lease_expires_at - timezone.now()).total_seconds()
    return row.status, row.lease_owner, left


def lapse(uuid: str) -> None:
    TaskRecord.objects.filter(uuid=uuid).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_the_claim_that_fills_the_last_slot_reserves_the_oldest_queued_task(
    scheduler: Scheduler,
) -> None:
    assert scheduler.num_workers == 2
    hold_slot(scheduler, "busy")
    first = scheduler.add_task(task_request(id="first"))
    after = scheduler.add_task(task_request(id="after"))
    scheduler.add_task(task_request(id="later"))

    taken = claim(None)

    assert taken is not None and taken.uuid == first
    assert taken.reserved is not None
    assert taken.reserved.uuid == after
    assert taken.reserved.request == task_request(id="after")
    assert taken.reserved.attempts == 0 and taken.reserved.fresh()
    state, owner, left = reservation_of(after)
    assert (state, owner) == (Status.QUEUED, leases.lease_owner())
    assert left == pytest.approx(5, abs=1)


def test_no_reservation_while_a_slot_is_free_or_without_reserve_seconds(
    scheduler: Scheduler,
) -> None:
    first = scheduler.add_task(task_request(id="first"))
    second = scheduler.add_task(task_request(id="second"))
    third = scheduler.add_task(task_request(id="third"))

    one = claim(first)
    two = claim(second, reserve_seconds=0)

    assert one is not None and one.reserved is None  # a slot was still free
    assert two is not None and two.reserved is None  # full, but none asked for
    assert reservation_of(third)[:2] == (Status.QUEUED, "")


def reserve_behind(scheduler: Scheduler, *names: str) -> tuple[leases.Claim, ...]:
    """Another slot held, then a claim of ``names[0]`` that fills the last slot and
    reserves ``names[1]``; the rest stay queued. (the other slot, the claim)"""
    other = hold_slot(scheduler, "the other slot")
    uuids = [scheduler.add_task(task_request(id=name)) for name in names]
    taken = claim(uuids[0])
    assert taken is not None and taken.reserved is not None
    assert taken.reserved.uuid == uuids[1]
    return other, taken


@pytest.mark.parametrize("path", ["function", "orm"])
def test_a_live_reservation_is_nobody_elses_and_a_lapsed_one_is_anyones(
    path: str, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    other, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    reserved = mine.reserved.uuid
    if path == "orm":
        monkeypatch.setattr(sql, "is_postgresql", lambda using="default": False)

    # The other slot finishes: its hand-over skips the live reservation.
    assert finish(other, reserve_seconds=0) is None
    assert reservation_of(reserved)[:2] == (Status.QUEUED, leases.lease_owner())
    # A message naming it, with a slot free, takes nothing either.
    assert claim(reserved, reserve_seconds=0) is None

    lapse(reserved)
    taken = claim(reserved, reserve_seconds=0)
    assert taken is not None and taken.uuid == reserved


def test_the_hand_over_takes_its_own_reservation_and_reserves_the_next(
    scheduler: Scheduler,
) -> None:
    _, mine = reserve_behind(scheduler, "mine", "reserved", "later")
    assert mine.reserved is not None
    reserved = mine.reserved.uuid
    later = TaskRecord.objects.get(status=Status.QUEUED, lease_owner="")
    # A task queued again after a lost lease keeps its place: older than the
    # reservation, and still not what this hand-over takes.
    TaskRecord.objects.filter(uuid=later.uuid).update(
        created_at=TaskRecord.objects.get(uuid=reserved).created_at
        - timedelta(seconds=10)
    )

    following = finish(mine)

    assert following is not None
    assert (following.uuid, following.attempt, following.owner) == (
        reserved,
        1,
        leases.lease_owner(),
    )
    assert following.request == task_request(id="reserved")
    assert status(reserved) == Status.PROCESSING
    assert following.reserved is not None and following.reserved.uuid == str(later.uuid)
    assert reservation_of(str(later.uuid))[:2] == (Status.QUEUED, leases.lease_owner())


def test_a_stopping_finish_gives_its_reservation_back_and_wakes_it(
    scheduler: Scheduler, redis_server: RedisServer
) -> None:
    redis_server.flushall()
    _, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    before = message_ids(redis_server)

    assert finish(mine, take_next=False) is None

    assert reservation_of(mine.reserved.uuid)[:2] == (Status.QUEUED, "")
    assert new_messages(redis_server, before) == [mine.reserved.uuid]


def test_a_refused_outcome_leaves_the_reservation_to_lapse(
    scheduler: Scheduler,
) -> None:
    _, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    # The lease was lost: the task went back to the queue.
    TaskRecord.objects.filter(uuid=mine.uuid).update(
        status=Status.QUEUED, lease_owner="", lease_expires_at=None
    )

    assert finish(mine) is None

    assert reservation_of(mine.reserved.uuid)[:2] == (
        Status.QUEUED,
        leases.lease_owner(),
    )
    assert status(mine.uuid) == Status.QUEUED


def test_a_request_over_the_inline_limit_is_not_reserved(
    scheduler: Scheduler,
) -> None:
    hold_slot(scheduler, "busy")
    first = scheduler.add_task(task_request(id="first"))
    scheduler.add_task(b"x" * (sql.INLINE_BYTES + MiB))

    taken = claim(first)

    assert taken is not None and taken.reserved is None
    assert TaskRecord.objects.filter(status=Status.QUEUED, lease_owner="").count() == 1


def test_the_reconciler_publishes_a_lapsed_reservation_when_a_slot_is_free(
    scheduler: Scheduler, redis_server: RedisServer
) -> None:
    redis_server.flushall()
    other, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    reserved = mine.reserved.uuid
    assert finish(other, reserve_seconds=0) is None
    # Live, it is left alone, however old its message, and stays reserved.
    assert leases.redispatch_stale(2, stale_seconds=0) == []
    assert reservation_of(reserved)[:2] == (Status.QUEUED, leases.lease_owner())

    lapse(reserved)
    before = message_ids(redis_server)
    assert leases.redispatch_stale(2, stale_seconds=3600) == [reserved]

    assert new_messages(redis_server, before) == [reserved]
    assert reservation_of(reserved) == (Status.QUEUED, "", None)


def started_ahead(uuids: list[str], cluster: Cluster) -> int:
    """How many of these tasks' processor calls began before the database recorded
    their start: the calls that ran ahead of their hand-over."""
    starts = {call.hash: call.start for call in cluster.call_log.calls()}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT hash, extract(epoch FROM started_at)::float8 FROM scheduler_task "
            "WHERE uuid = ANY(%s::uuid[])",
            [uuids],
        )
        return sum(1 for digest, at in cursor.fetchall() if starts[digest] < at)


def test_a_worker_runs_its_reserved_tasks_ahead_and_the_cap_holds(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    cluster.configure(scheduler_num_workers=2)
    cluster.start_worker(concurrency=2)
    uuids = [scheduler.add_task(task_request(id=i, sleep=0.05)) for i in range(60)]

    wait_until(
        lambda: (
            TaskRecord.objects.filter(uuid__in=uuids, status=Status.DONE).count()
            == len(uuids)
        ),
        90,
        message="every task to be done",
    )

    assert_each_done_once(cluster, uuids)
    overlap = cluster.call_log.overlapping(2)
    assert overlap == [], describe_overlap(overlap)
    # Each slot's first task is claimed, the rest are handed over; all but a few
    # (a reservation made when the queue had just been emptied) ran ahead.
    assert started_ahead(uuids, cluster) >= len(uuids) // 2, cluster.logs()
    logs = "\n".join(w.log_path.read_text(errors="replace") for w in cluster.workers)
    assert "ran ahead as this process's reserved task, but" not in logs


def test_a_task_reserved_behind_a_long_one_starts_on_a_freed_slot_soon(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    # This process plays the reserving worker, whose task runs long: it holds one
    # slot and a reservation of 1 s; the other slot is let go with nothing else to do.
    cluster.configure(scheduler_num_workers=2)
    other = hold_slot(scheduler, "the slot that frees")
    long_one = scheduler.add_task(task_request(id="long"))
    reserved = scheduler.add_task(task_request(id="reserved"))
    mine = claim(long_one, reserve_seconds=1.0)
    assert mine is not None and mine.reserved is not None
    assert mine.reserved.uuid == reserved
    until = TaskRecord.objects.get(uuid=reserved).lease_expires_at
    assert finish(other, reserve_seconds=0) is None
    cluster.start_worker(concurrency=2)
    ready = timezone.now()

    wait_until(lambda: status(reserved) == Status.DONE, 30, message="the reserved task")

    row = TaskRecord.objects.get(uuid=reserved)
    assert row.attempts == 1 and row.worker != "test"
    assert until is not None and row.started_at is not None
    # Not before its reservation lapsed; then within a few reconciler ticks (0.5 s)
    # of the lapse, or of the worker's start if that came later.
    assert row.started_at >= until
    assert (row.started_at - max(until, ready)).total_seconds() < 5
    assert status(mine.uuid) == Status.PROCESSING  # still this process's


def test_a_dead_processs_reservation_ends_with_its_lease(
    scheduler: Scheduler, redis_server: RedisServer
) -> None:
    redis_server.flushall()
    _, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    reserved = mine.reserved.uuid

    # The keeper found the process gone.
    assert leases.expire(mine.uuid, mine.owner) == 1

    left = reservation_of(reserved)[2]
    assert left is not None and left < 0
    assert [uuid for uuid, _ in leases.recover_expired(max_attempts=5)] == [mine.uuid]
    before = message_ids(redis_server)
    assert leases.redispatch_stale(2, stale_seconds=3600) == [reserved]
    assert new_messages(redis_server, before) == [reserved]


def test_a_failed_hand_over_keeps_the_slot_of_the_task_running_ahead(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-over fails before the server sees it, while the reserved task runs.

    Writing the task before alone would let its slot go with the reserved task still
    running on it: another worker could then start a task beside it, over the cap.
    """
    before = str(scheduler.add_task(task_request(id="before")))
    ahead = str(scheduler.add_task(task_request(id="ahead")))
    waiting = str(scheduler.add_task(task_request(id="waiting")))
    held = leases.claim(
        before, worker="w1", num_workers=1, lease_seconds=60, reserve_seconds=3.0
    )
    assert held is not None and held.reserved is not None
    assert held.reserved.uuid == ahead
    fetch = sql.fetch
    failed: list[str] = []

    def fail_the_first_hand_over(using: str, query: str, params: Any) -> Any:
        if "scheduler_finish(" in query and params[6] and not failed:  # take_next
            failed.append(str(params[0]))
            raise OperationalError("server closed the connection unexpectedly")
        return fetch(using, query, params)

    monkeypatch.setattr(sql, "fetch", fail_the_first_hand_over)
    taken_elsewhere: list[str] = []

    def another_worker_looks_for_a_slot() -> None:
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not taken_elsewhere:
                got = leases.claim(None, worker="w2", num_workers=1, lease_seconds=60)
                if got is not None:
                    taken_elsewhere.append(got.uuid)
                time.sleep(0.05)
        finally:
            connection.close()

    class Processor:
        def process(self, request: bytes) -> bytes:
            if b"before" in request:
                time.sleep(0.05)  # long enough to run the next one ahead
            if b"ahead" in request:
                thread = threading.Thread(target=another_worker_looks_for_a_slot)
                thread.start()
                thread.join()
            return request

    try:
        ran = runner.run(
            held,
            Processor(),
            worker="w1",
            lease_seconds=60,
            should_stop=lambda: False,
            num_workers=1,
            reserve_seconds=3.0,
        )
    finally:
        db_thread.submit(connections.close_all).result()

    assert failed == [before]
    assert not taken_elsewhere, "a slot was free while the reserved task ran ahead"
    assert ran == [before, ahead, waiting]
    for uuid in (before, ahead, waiting):
        row = TaskRecord.objects.get(uuid=uuid)
        assert (row.status, row.attempts) == (Status.DONE, 1), (uuid, row.status)
