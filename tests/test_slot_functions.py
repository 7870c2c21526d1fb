"""Claim and finish as one PL/pgSQL call each: the cap under many processes, the lease
guard, requests and results in binary, and a message for a queued task whenever a slot
is let go without a hand-over (an admission that saw every slot busy sent none)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from tasks_app import leases, sql
from tasks_app.config import scheduler_config
from tasks_app.models import Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import ROOT, Cluster, RedisServer, hold_slot, task_request

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


@pytest.fixture(params=["function", "orm"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The PL/pgSQL calls, or the ORM statements that other databases (SQLite) take."""
    if request.param == "orm":
        monkeypatch.setattr(sql, "is_postgresql", lambda using="default": False)
    return str(request.param)


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    redis_server.flushall()
    yield redis_server


def message_ids(redis_server: RedisServer) -> list[str]:
    """The task UUID of each message waiting in the broker, oldest first."""
    raw = redis_server.command("LRANGE", "celery", "0", "-1")
    messages = [json.loads(line) for line in raw.splitlines() if line.strip()]
    # Kombu pushes on the left: the newest message comes first.
    return [message["headers"]["id"] for message in reversed(messages)]


def new_messages(redis_server: RedisServer, before: list[str]) -> list[str]:
    after = message_ids(redis_server)
    assert after[: len(before)] == before
    return after[len(before) :]


def status(uuid: str) -> str:
    return TaskRecord.objects.get(uuid=uuid).status


def stored_result(uuid: str) -> bytes | None:
    result = TaskRecord.objects.get(uuid=uuid).result
    return None if result is None else bytes(result)


def finished_count(status: Status) -> float:
    value = REGISTRY.get_sample_value(
        "scheduler_tasks_finished_total", {"status": status.value}
    )
    return value or 0.0


def test_claim_takes_the_named_task_then_the_oldest_and_nothing_past_the_cap(
    path: str, scheduler: Scheduler
) -> None:
    assert scheduler.num_workers == 2
    oldest = scheduler.add_task(task_request(id="oldest"))
    named = scheduler.add_task(task_request(id="named"))
    scheduler.add_task(task_request(id="left waiting"))

    first = leases.claim(named, worker="w", num_workers=2, lease_seconds=60)
    second = leases.claim(named, worker="w", num_workers=2, lease_seconds=60)
    third = leases.claim(None, worker="w", num_workers=2, lease_seconds=60)

    assert first is not None and first.uuid == named and first.attempt == 1
    assert second is not None and second.uuid == oldest
    assert third is None
    row = TaskRecord.objects.get(uuid=named)
    assert row.status == Status.PROCESSING
    assert row.lease_owner == first.owner == leases.lease_owner()
    assert row.started_at is not None and row.lease_expires_at is not None
    # The lease runs from when the task started, which is the claim statement's start
    # or, on PostgreSQL, a little after it (any lock waits in between).
    lease = (row.lease_expires_at - row.started_at).total_seconds()
    assert 60 <= lease < 61
    assert TaskRecord.objects.filter(status=Status.PROCESSING).count() == 2


def test_a_stopping_worker_wakes_the_oldest_queued_task(
    path: str, scheduler: Scheduler, broker: RedisServer
) -> None:
    first = hold_slot(scheduler, "first")
    hold_slot(scheduler, "second")
    oldest = scheduler.add_task(task_request(id="waits"))
    scheduler.add_task(task_request(id="waits too"))
    before = message_ids(broker)

    following = leases.finish(
        first,
        leases.Outcome(Status.DONE, result=b"ok"),
        take_next=False,
        worker="test",
        lease_seconds=60,
    )

    assert following is None
    assert status(first.uuid) == Status.DONE
    assert status(oldest) == Status.QUEUED
    assert new_messages(broker, before) == [oldest]


def test_a_stopping_worker_with_nothing_queued_publishes_nothing(
    path: str, scheduler: Scheduler, broker: RedisServer
) -> None:
    first = hold_slot(scheduler, "alone")
    before = message_ids(broker)

    leases.finish(
        first,
        leases.Outcome(Status.ERROR, error="it failed"),
        take_next=False,
        worker="test",
        lease_seconds=60,
    )

    row = TaskRecord.objects.get(uuid=first.uuid)
    assert (row.status, row.error, row.result, row.result_size) == (
        Status.ERROR,
        "it failed",
        None,
        None,
    )
    assert new_messages(broker, before) == []


def test_a_task_failed_at_its_time_limit_wakes_the_oldest_queued_task(
    scheduler: Scheduler, broker: RedisServer
) -> None:
    first = hold_slot(scheduler, "too long")
    hold_slot(scheduler, "busy")
    oldest = scheduler.add_task(task_request(id="waits"))
    before = message_ids(broker)

    assert leases.fail_running(first.uuid, first.owner, first.attempt, "time limit")
    # Its guard holds: a second attempt to fail it changes and publishes nothing.
    assert not leases.fail_running(first.uuid, first.owner, first.attempt, "again")

    assert status(first.uuid) == Status.ERROR
    assert status(oldest) == Status.QUEUED
    assert new_messages(broker, before) == [oldest]


def test_recovery_wakes_a_queued_task_for_each_task_it_ends_in_error(
    scheduler: Scheduler, broker: RedisServer
) -> None:
    max_attempts = scheduler_config().max_attempts
    exhausted = hold_slot(scheduler, "killed its worker every time")
    lost = hold_slot(scheduler, "lost its worker once")
    oldest = scheduler.add_task(task_request(id="waits"))
    scheduler.add_task(task_request(id="waits too"))
    past = timezone.now() - timedelta(seconds=5)
    TaskRecord.objects.filter(uuid=exhausted.uuid).update(
        attempts=max_attempts, lease_expires_at=past
    )
    TaskRecord.objects.filter(uuid=lost.uuid).update(lease_expires_at=past)
    before = message_ids(broker)

    recovered = leases.recover_expired(max_attempts)

    assert sorted(recovered) == sorted(
        [(exhausted.uuid, Status.ERROR), (lost.uuid, Status.QUEUED)]
    )
    # The task queued again has its own message; the slot of the one in error goes
    # to the oldest other queued task, not to that same task a second time.
    assert sorted(new_messages(broker, before)) == sorted([lost.uuid, oldest])


def test_a_late_finish_is_refused_and_passes_no_slot_on(
    path: str, scheduler: Scheduler, broker: RedisServer
) -> None:
    late = hold_slot(scheduler, "lost its lease")
    waiting = scheduler.add_task(task_request(id="waits"))
    TaskRecord.objects.filter(uuid=late.uuid).update(
        lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    assert leases.recover_expired(scheduler_config().max_attempts) == [
        (late.uuid, Status.QUEUED)
    ]
    again = leases.claim(late.uuid, worker="w", num_workers=2, lease_seconds=60)
    assert again is not None and again.attempt == late.attempt + 1
    done_before = finished_count(Status.DONE)
    before = message_ids(broker)

    following = leases.finish(
        late,
        leases.Outcome(Status.DONE, result=b"late"),
        take_next=True,
        worker="test",
        lease_seconds=60,
    )

    assert following is None
    row = TaskRecord.objects.get(uuid=late.uuid)
    assert (row.status, row.attempts, row.result) == (Status.PROCESSING, 2, None)
    assert row.lease_owner == again.owner
    assert status(waiting) == Status.QUEUED
    assert finished_count(Status.DONE) == done_before
    assert new_messages(broker, before) == []

    leases.finish(
        again,
        leases.Outcome(Status.DONE, result=b"on time"),
        take_next=False,
        worker="test",
        lease_seconds=60,
    )
    row.refresh_from_db()
    assert (row.status, row.result_size) == (Status.DONE, 7)
    assert stored_result(late.uuid) == b"on time"
    assert finished_count(Status.DONE) == done_before + 1


def test_requests_and_results_of_several_mib_round_trip_byte_exact(
    scheduler: Scheduler,
) -> None:
    assert sql.is_postgresql()
    # Every byte value, NUL included, in sizes that are no multiple of anything, on
    # both sides of the size that moves in chunks: a large request claimed, a small
    # and a large one handed over; a small result and a large one.
    large, small = 5 * MiB + 7, 3 * MiB + 1
    assert small < sql.INLINE_BYTES < large
    requests = [
        bytes(range(256)) * 4 + os.urandom(large),
        os.urandom(small) + b"\x00",
        os.urandom(large + 1),
    ]
    results = [os.urandom(small), requests[1] + requests[0], requests[2]]
    uuids = [scheduler.add_task(request) for request in requests]

    claim = leases.claim(uuids[0], worker="w", num_workers=1, lease_seconds=60)
    for uuid, request, result in zip(uuids, requests, results, strict=True):
        assert claim is not None and claim.uuid == uuid
        assert type(claim.request) is bytes and claim.request == request
        claim = leases.finish(
            claim,
            leases.Outcome(Status.DONE, result=result),
            take_next=True,
            worker="w",
            lease_seconds=60,
        )
    assert claim is None

    for uuid, result in zip(uuids, results, strict=True):
        row = TaskRecord.objects.get(uuid=uuid)
        assert (row.status, row.result_size) == (Status.DONE, len(result))
        assert stored_result(uuid) == result


def test_many_processes_claiming_and_finishing_never_pass_the_cap(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    tasks, processes, num_workers = 240, 8, 3
    uuids = {scheduler.add_task(task_request(id=f"churn {n}")) for n in range(tasks)}
    start_at = time.time() + 3.0
    churners = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.churner",
                "--start-at",
                str(start_at),
                "--num-workers",
                str(num_workers),
                "--seconds",
                "90",
            ],
            cwd=ROOT,
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    # Watched from outside as well: the most slots in use that any moment showed.
    most_watched = 0
    while any(churner.poll() is None for churner in churners):
        most_watched = max(most_watched, leases.slots_in_use())
        time.sleep(0.002)
    reports = []
    for churner in churners:
        out, err = churner.communicate(timeout=60)
        assert churner.returncode == 0, err.decode()[-2000:]
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))

    most_seen = max(report["most_seen"] for report in reports)
    assert most_seen <= num_workers and most_watched <= num_workers, reports
    # The cap was reached, so it was under test.
    assert most_seen == num_workers, reports
    assert sum(report["ran"] for report in reports) == tasks
    done = TaskRecord.objects.filter(uuid__in=uuids, status=Status.DONE)
    assert done.count() == tasks
