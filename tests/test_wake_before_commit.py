"""A new task's wake-up leaves before its admission commits, and its claim waits for it.

The admission's commit waits for the disk; sending the wake-up first lets that wait
overlap the broker and the worker's way to its claim. A claim that arrives before the
commit must neither miss the task nor see one that is rolled back.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid as uuid_module
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, OperationalError, connection, connections

from tasks_app import admission, leases, sql, wakeup_publisher
from tasks_app.grpc_api.status import failure_of
from tasks_app.leases import Claim
from tasks_app.models import Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import (
    RedisServer,
    hold_slot,
    running_redis,
    task_request,
    wait_until,
)
from tests.test_slot_functions import message_ids
from tests.test_wakeup_publisher import use_broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def open_admission(live_database_url: str) -> Iterator[tuple[psycopg.Connection, str]]:
    """An admission whose statement has run and whose commit has not, as a web
    process holds one while its wake-up is on its way."""
    request = task_request(id=f"ahead {uuid_module.uuid4()}")
    uuid = str(uuid_module.uuid4())
    with psycopg.connect(live_database_url) as admitting:
        outcome, _, _, wake = admitting.execute(
            "SELECT * FROM scheduler_admit(%s::uuid, %s, %s, 100, 4)",
            (uuid, hashlib.sha256(request).hexdigest(), request),
        ).fetchone() or (None, None, None, None)
        assert (outcome, wake) == ("created", True)
        yield admitting, uuid


def claim_waiting_for_the_admission(
    uuid: str,
) -> tuple[threading.Thread, list[Claim | None]]:
    """A claim woken for ``uuid`` in a thread of its own, once it waits on the lock."""
    claims: list[Claim | None] = []

    def claim() -> None:
        try:
            claims.append(
                leases.claim(uuid, worker="w", num_workers=4, lease_seconds=60)
            )
        finally:
            connection.close()

    thread = threading.Thread(target=claim)
    thread.start()
    wait_until(lambda: claims_waiting_for_an_admission() == 1, 10)
    return thread, claims


def claims_waiting_for_an_admission() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' "
            "AND datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def test_a_claim_woken_before_the_admission_commits_waits_and_takes_the_task(
    open_admission: tuple[psycopg.Connection, str],
) -> None:
    admitting, uuid = open_admission
    thread, claims = claim_waiting_for_the_admission(uuid)
    assert claims == []

    admitting.commit()
    thread.join(10)

    (claim,) = claims
    assert claim is not None and claim.uuid == uuid
    assert TaskRecord.objects.get(uuid=uuid).status == Status.PROCESSING


def test_a_claim_woken_for_an_admission_that_rolls_back_takes_nothing(
    open_admission: tuple[psycopg.Connection, str],
) -> None:
    admitting, uuid = open_admission
    thread, claims = claim_waiting_for_the_admission(uuid)

    admitting.rollback()
    thread.join(10)

    assert claims == [None]
    assert not TaskRecord.objects.exists()


@pytest.fixture
def warm_publisher(scheduler: Scheduler, broker: RedisServer) -> Scheduler:
    """The process's first wake-up builds its publisher, and its second finds no
    connection idle: both go after their commit, and the second leaves its
    connection idle for the next wake-up to go ahead on."""
    scheduler.add_task(task_request(id="builds the publisher"))
    scheduler.add_task(task_request(id="opens a connection to keep"))
    broker.flushall()
    return scheduler


def test_the_wake_up_leaves_while_the_admission_is_uncommitted(
    warm_publisher: Scheduler,
    broker: RedisServer,
    live_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, psycopg.pq.TransactionStatus, int, bool]] = []
    send_ahead = wakeup_publisher.WakeUpPublisher.send_ahead

    def watched(self: wakeup_publisher.WakeUpPublisher, uuid: str) -> Any:
        status = connections["default"].connection.info.transaction_status
        with psycopg.connect(live_database_url) as other:
            (rows,) = other.execute(
                "SELECT count(*) FROM scheduler_task WHERE uuid = %s::uuid", (uuid,)
            ).fetchone() or (None,)
        sent_on = send_ahead(self, uuid)
        seen.append((uuid, status, rows, sent_on is not None))
        return sent_on

    monkeypatch.setattr(wakeup_publisher.WakeUpPublisher, "send_ahead", watched)
    uuids = [warm_publisher.add_task(task_request(id=f"wake {n}")) for n in range(3)]

    assert seen == [
        (uuid, psycopg.pq.TransactionStatus.INTRANS, 0, True) for uuid in uuids
    ]
    assert message_ids(broker) == uuids
    assert TaskRecord.objects.filter(uuid__in=uuids).count() == 3


def test_a_wake_up_for_an_admission_whose_commit_failed_runs_nothing(
    warm_publisher: Scheduler,
    broker: RedisServer,
    live_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The admitting session dies between its statement and its commit, after its
    wake-up left: the caller gets the error, and the wake-up finds no task."""
    send_ahead = wakeup_publisher.WakeUpPublisher.send_ahead

    def then_lose_the_session(self: wakeup_publisher.WakeUpPublisher, uuid: str) -> Any:
        sent_on = send_ahead(self, uuid)
        pid = connections["default"].connection.info.backend_pid
        with psycopg.connect(live_database_url) as other:
            other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        return sent_on

    monkeypatch.setattr(
        wakeup_publisher.WakeUpPublisher, "send_ahead", then_lose_the_session
    )
    with pytest.raises(DatabaseError):
        warm_publisher.add_task(task_request(id="lost with its session"))
    monkeypatch.undo()
    connection.close_if_unusable_or_obsolete()  # as at the end of a request

    (stray,) = message_ids(broker)
    assert not TaskRecord.objects.filter(uuid=stray).exists()
    # Its claim takes what any wake-up takes when its own task is gone: the oldest.
    oldest = TaskRecord.objects.filter(status=Status.QUEUED).earliest("created_at")
    claim = leases.claim(stray, worker="w", num_workers=4, lease_seconds=60)
    assert claim is not None and claim.uuid == str(oldest.uuid)
    # The next admission goes through, and wakes a worker for its own task.
    again = warm_publisher.add_task(task_request(id="lost with its session"))
    assert message_ids(broker) == [stray, again]


def test_a_wake_up_after_the_broker_restarted_still_arrives(
    scheduler: Scheduler, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection kept idle for the next wake-up died with the old server."""
    with running_redis() as server, monkeypatch.context() as patch:
        use_broker(patch, server.url)
        before = [scheduler.add_task(task_request(id=f"before {n}")) for n in range(2)]
        publisher = wakeup_publisher.built_for_this_process()
        assert publisher is not None and publisher.idle

        server.stop()
        server.start()
        after = scheduler.add_task(task_request(id="after the restart"))

        # The first two went to the server before its restart, which kept nothing.
        assert len(before) == 2
        assert message_ids(server) == [after]


def test_an_admission_goes_ahead_only_alone_in_its_process_and_with_a_slot_free() -> (
    None
):
    guide = admission._WakeAheadGuide()
    with guide.admission() as first, guide.admission() as second:
        assert (first, second) == (True, False)
    guide.slots_were_free = False
    with guide.admission() as alone_but_busy:
        assert not alone_but_busy
    guide.slots_were_free = True
    with guide.admission() as alone_again:
        assert alone_again


def test_with_every_slot_busy_the_next_admission_commits_first(
    warm_publisher: Scheduler, broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that finds every slot busy gets no wake-up, and the next admission does
    not keep its locks open for one; once a task finds a slot free, the next one
    goes ahead again."""
    held = [
        hold_slot(warm_publisher, f"holder {n}")
        for n in range(warm_publisher.num_workers)
    ]
    went_ahead: list[bytes] = []
    fetch_before_commit = sql.fetch_before_commit

    def watched(using: str, query: str, params: tuple[Any, ...]) -> Any:
        went_ahead.append(params[2])
        return fetch_before_commit(using, query, params)

    monkeypatch.setattr(sql, "fetch_before_commit", watched)
    broker.flushall()
    busy = [task_request(id=f"finds every slot busy {n}") for n in range(3)]
    for request in busy:
        warm_publisher.add_task(request)
    # The first still guessed from the task before it, which found a slot free.
    assert went_ahead == busy[:1]
    assert message_ids(broker) == []

    for claim in held:
        leases.finish(
            claim,
            leases.Outcome(Status.DONE, result=b"ok"),
            take_next=False,
            worker="test",
            lease_seconds=60,
        )
    broker.flushall()
    finds_a_slot_free = task_request(id="a slot is free")
    goes_ahead = task_request(id="and goes ahead")
    woken = [warm_publisher.add_task(finds_a_slot_free)]
    woken.append(warm_publisher.add_task(goes_ahead))
    assert went_ahead == [*busy[:1], goes_ahead]
    assert message_ids(broker) == woken


def test_an_admission_interrupted_before_its_commit_leaves_nothing_behind(
    warm_publisher: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever ends the admission between its statement and its commit rolls it
    back: the connection is out of the transaction, and the next admission sticks."""

    def interrupted(self: wakeup_publisher.WakeUpPublisher, uuid: str) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(wakeup_publisher.WakeUpPublisher, "send_ahead", interrupted)
    with pytest.raises(KeyboardInterrupt):
        warm_publisher.add_task(task_request(id="interrupted"))
    monkeypatch.undo()

    raw = connections["default"].connection
    assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert not TaskRecord.objects.filter(request_size=len(b'{"id": "interrupted"}'))
    uuid = warm_publisher.add_task(task_request(id="interrupted"))
    connection.close()  # what follows reads on a connection of its own
    assert TaskRecord.objects.get(uuid=uuid).status == Status.QUEUED


def test_a_process_frozen_before_its_commit_holds_the_admission_lock_a_second(
    warm_publisher: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other admissions wait for the frozen one's session to be ended, not for the
    connection's general limit; the frozen caller gets an error, not a UUID."""
    frozen_seconds = 4.0

    def frozen(self: wakeup_publisher.WakeUpPublisher, uuid: str) -> Any:
        time.sleep(frozen_seconds)  # holding the admission lock, as SIGSTOP would
        return None

    monkeypatch.setattr(wakeup_publisher.WakeUpPublisher, "send_ahead", frozen)
    failures: list[BaseException] = []

    def admit_and_freeze() -> None:
        try:
            warm_publisher.add_task(task_request(id="frozen"))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    freezing = threading.Thread(target=admit_and_freeze)
    freezing.start()
    time.sleep(0.3)  # the frozen one now holds the lock
    started = time.monotonic()
    other = warm_publisher.add_task(task_request(id="behind the frozen one"))
    waited = time.monotonic() - started
    freezing.join(frozen_seconds + 10)

    assert waited < frozen_seconds - 1.5, (waited, failures)
    # Told as a lost connection, which gRPC answers UNAVAILABLE with a retry-after.
    assert len(failures) == 1 and isinstance(failures[0], OperationalError)
    assert failure_of(failures[0]).code == "unavailable"
    assert not TaskRecord.objects.filter(request_size=len(b'{"id": "frozen"}'))
    assert TaskRecord.objects.filter(uuid=other).exists()
