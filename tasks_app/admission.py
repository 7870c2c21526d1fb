"""Admission: the closed check, deduplication by hash and the queue bound, as one decision.

Every admission (a new request, a retry) locks the scheduler's switch row, so across all
replicas the decisions are serial: two identical requests can never both insert, and the
queue can never pass its bound. A duplicate is answered without the lock.

On PostgreSQL a new request is one call of ``scheduler_admit`` (migration 0004): the
lock, the checks and the insert in one statement, with the bytes sent as bytes; when the
service is quiet, its wake-up leaves before the commit (``_WakeAheadGuide``). Other
databases take the ORM path below, which makes the same decision in several statements.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid as uuid_module
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Subquery
from django.db.models.functions import Now

from . import sql
from .dispatch import WakeUpAhead, can_wake_ahead, publish_on_commit
from .errors import (
    EmptyRequest,
    QueueFull,
    Refused,
    RequestTooLarge,
    SchedulerClosed,
    TaskNotFound,
    WrongStatus,
)
from .interfaces import UUID, TaskStatus
from .metrics import counters
from .models import SchedulerSwitch, Status, TaskRecord

log = logging.getLogger(__name__)


class Admission(str):
    """The UUID of an admitted request, as a ``str``, with what the admission found.

    ``created`` is false when a task with the same hash already existed; ``status`` is
    that task's status at the time of the answer.
    """

    created: bool
    status: TaskStatus

    def __new__(cls, uuid: str, *, created: bool, status: TaskStatus) -> Admission:
        admission = super().__new__(cls, uuid)
        admission.created = created
        admission.status = status
        return admission

    @property
    def uuid(self) -> UUID:
        return UUID(str(self))


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    queue_size: int
    # The slot count, to know whether every slot is busy (then no wake-up is sent).
    num_workers: int
    max_request_bytes: int
    accepting_here: bool


def request_hash(request: bytes) -> str:
    return hashlib.sha256(request).hexdigest()


def check_request_size(size: int, max_request_bytes: int) -> None:
    """Refuse empty and oversized requests before anything hashes or stores them."""
    if size == 0:
        raise EmptyRequest("the request is empty; send the bytes to process")
    refuse_oversized(size, max_request_bytes)


def refuse_oversized(
    size: int, max_request_bytes: int, *, at_least: bool = False
) -> None:
    """The one place a request is refused for its size, also from its declared size.

    ``at_least`` says that ``size`` is only what arrived before the refusal, as for a
    chunked body, whose size nobody declares.
    """
    if size > max_request_bytes:
        counters.count_refusal(RequestTooLarge.code)
        raise RequestTooLarge(size, max_request_bytes, at_least=at_least)


def lock_switch(using: str) -> SchedulerSwitch:
    """Take the admission lock and read the shared closed flag under it."""
    rows = SchedulerSwitch.objects.using(using)
    switch = rows.select_for_update().filter(pk=1).first()
    if switch is None:
        # A migration makes the row; if it was deleted, make it again, then lock it:
        # the row get_or_create returns after losing a race is not locked.
        rows.get_or_create(pk=1)
        switch = rows.select_for_update().get(pk=1)
    return switch


def is_closed(using: str) -> bool:
    return SchedulerSwitch.objects.using(using).filter(pk=1, closed=True).exists()


@dataclass(frozen=True, slots=True)
class _Survey:
    closed: bool
    existing: Admission | None
    queued: int


def _survey(digest: str, using: str, *, count_queued: bool) -> _Survey:
    """The closed flag, the task with this hash and the queue length, in one query.

    One round trip matters here: every submission pays it, and a duplicate pays
    nothing else. Under the admission lock it must be a statement of its own, issued
    after the lock is taken, so that it sees every admission committed before.
    """
    tasks = TaskRecord.objects.using(using)
    same_hash = tasks.filter(hash=digest).order_by()
    columns: dict[str, Subquery] = {
        "task_uuid": Subquery(same_hash.values("uuid")[:1]),
        "task_status": Subquery(same_hash.values("status")[:1]),
    }
    if count_queued:
        columns["queued"] = Subquery(
            tasks.filter(status=Status.QUEUED)
            .order_by()
            .values("status")
            .annotate(n=Count("uuid"))
            .values("n")
        )
    row = (
        SchedulerSwitch.objects.using(using)
        .filter(pk=1)
        .annotate(**columns)
        .values("closed", *columns)
        .first()
    )
    if row is None:  # the switch row is made by a migration; tolerate its absence
        SchedulerSwitch.objects.using(using).get_or_create(pk=1)
        return _survey(digest, using, count_queued=count_queued)
    existing = None
    if row["task_uuid"] is not None:
        existing = Admission(
            str(row["task_uuid"]), created=False, status=TaskStatus(row["task_status"])
        )
    return _Survey(bool(row["closed"]), existing, int(row.get("queued") or 0))


def _existing(request_hash_hex: str, using: str) -> Admission | None:
    return _survey(request_hash_hex, using, count_queued=False).existing


def admit(request: bytes, policy: AdmissionPolicy, using: str = "default") -> Admission:
    """Admit a request, or answer the task that already has its hash."""
    try:
        admission = _admit(request, policy, using)
    except Refused as exc:
        counters.count_refusal(exc.code)
        raise
    if admission.created:
        counters.count_admission("new")
    else:
        counters.count_dedup_hit()
    return admission


def _admit(request: bytes, policy: AdmissionPolicy, using: str) -> Admission:
    check_request_size(len(request), policy.max_request_bytes)
    if not policy.accepting_here:
        raise SchedulerClosed("this replica is held closed (SCHEDULER_ACCEPTING=false)")
    digest = request_hash(request)
    if sql.is_postgresql(using):
        return _admit_in_one_call(request, digest, policy, using)

    # The fast path: a duplicate needs no lock, and is answered even when the queue is full.
    survey = _survey(digest, using, count_queued=False)
    if survey.closed:
        raise SchedulerClosed()
    if survey.existing is not None:
        return survey.existing

    try:
        with transaction.atomic(using=using):
            return _insert_under_lock(request, digest, policy, using)
    except IntegrityError:
        # Only reachable if the lock was bypassed (a row written by other means): the
        # unique hash still makes the answer the existing task.
        existing = _existing(digest, using)
        if existing is None:
            raise
        return existing


ADMIT_CALL = (
    "SELECT * FROM scheduler_admit("
    "%s::uuid, %s::text, {request}, %s::integer, %s::integer)"
)


class _WakeAheadGuide:
    """Whether this process's next admission should send its wake-up ahead of its commit.

    Ahead, the admission keeps its transaction open for one more round trip, and with
    it the admission lock that every replica's new tasks queue behind (and, with every
    slot busy, the slot lock that claims and hand-overs take). That is worth it for a
    task that finds the service quiet, whose latency it cuts; under load it would only
    lengthen the serial part of every admission: measured here, a burst from 8 threads
    admitted about 600 tasks a second ahead and 960 after the commit. So an admission
    goes ahead only when no other is in flight in this process and the last new task
    found a slot free (with none free, no wake-up is sent at all). A wrong guess costs
    time, never a task: both ways wake a worker whenever a slot is free.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.slots_were_free = True

    @contextmanager
    def admission(self) -> Iterator[bool]:
        """Count one admission in flight; yields whether it may go ahead."""
        with self._lock:
            alone = self._in_flight == 0
            self._in_flight += 1
        try:
            yield alone and self.slots_were_free
        finally:
            with self._lock:
                self._in_flight -= 1


_wake_ahead = _WakeAheadGuide()


def _admit_in_one_call(
    request: bytes, digest: str, policy: AdmissionPolicy, using: str
) -> Admission:
    uuid = str(uuid_module.uuid4())
    try:
        with _wake_ahead.admission() as ahead:
            if (
                ahead
                and sql.can_fetch_before_commit(using, len(request))
                and can_wake_ahead()
            ):
                outcome, task_uuid, task_status, wake = _admit_waking_ahead(
                    uuid, request, digest, policy, using
                )
            else:
                outcome, task_uuid, task_status, wake = _admit_then_wake(
                    uuid, request, digest, policy, using
                )
    except IntegrityError:
        # Only reachable if the lock was bypassed (a row written by other means): the
        # unique hash still makes the answer the existing task.
        existing = _existing(digest, using)
        if existing is None:
            raise
        return existing
    if outcome == "closed":
        raise SchedulerClosed()
    if outcome == "full":
        raise QueueFull(policy.queue_size)
    if outcome == "existing":
        return Admission(str(task_uuid), created=False, status=TaskStatus(task_status))
    _wake_ahead.slots_were_free = bool(wake)
    log.info(
        "task %s: queued (%d bytes, hash %s)%s",
        uuid,
        len(request),
        digest[:12],
        "" if wake else "; every slot is busy, so a finishing worker takes it",
        extra={"task_uuid": uuid, "event": "queued"},
    )
    return Admission(uuid, created=True, status=TaskStatus.QUEUED)


def _admit_then_wake(
    uuid: str, request: bytes, digest: str, policy: AdmissionPolicy, using: str
) -> tuple[str, Any, Any, bool]:
    """The admission's call, and its wake-up once it has committed."""
    with sql.bytes_argument(using, request) as (argument, bytes_params):
        ((outcome, task_uuid, task_status, wake),) = sql.fetch(
            using,
            ADMIT_CALL.format(request=argument),
            (uuid, digest, *bytes_params, policy.queue_size, policy.num_workers),
        )
    if outcome == "created" and wake:
        publish_on_commit([uuid], using)
    return outcome, task_uuid, task_status, wake


def _admit_waking_ahead(
    uuid: str, request: bytes, digest: str, policy: AdmissionPolicy, using: str
) -> tuple[str, Any, Any, bool]:
    """The admission's call, with the wake-up sent between its answer and its commit.

    The commit waits for the disk; meanwhile the wake-up travels, and a claim that
    arrives first waits for the commit (migration 0009). The UUID is answered only
    after the commit, so a task is still durable before anyone outside hears of it.
    """
    with (
        WakeUpAhead() as wake_up,
        sql.fetch_before_commit(
            using,
            ADMIT_CALL.format(request="%s::bytea"),
            (uuid, digest, request, policy.queue_size, policy.num_workers),
        ) as rows,
    ):
        ((outcome, task_uuid, task_status, wake),) = rows
        if outcome == "created" and wake:
            wake_up.send(uuid)
    return outcome, task_uuid, task_status, wake


def _insert_under_lock(
    request: bytes, digest: str, policy: AdmissionPolicy, using: str
) -> Admission:
    lock_switch(using)
    survey = _survey(digest, using, count_queued=True)
    if survey.closed:
        raise SchedulerClosed()
    if survey.existing is not None:
        return survey.existing
    if survey.queued >= policy.queue_size:
        raise QueueFull(policy.queue_size)

    uuid = str(uuid_module.uuid4())
    # The database's clock, as for leases: replicas whose clocks drift apart must
    # still agree on the order of tasks and on how long one has waited.
    TaskRecord.objects.using(using).create(
        uuid=uuid,
        hash=digest,
        status=Status.QUEUED,
        request=request,
        request_size=len(request),
        created_at=Now(),
        dispatched_at=Now(),
    )
    publish_on_commit([uuid], using)
    log.info(
        "task %s: queued (%d bytes, hash %s)",
        uuid,
        len(request),
        digest[:12],
        extra={"task_uuid": uuid, "event": "queued"},
    )
    return Admission(uuid, created=True, status=TaskStatus.QUEUED)


def readmit(uuid: UUID, policy: AdmissionPolicy, using: str = "default") -> None:
    """Queue a task in ``error`` again under its UUID, with a fresh attempt budget."""
    try:
        _readmit(uuid, policy, using)
    except Refused as exc:
        counters.count_refusal(exc.code)
        raise
    counters.count_admission("retry")


def _readmit(uuid: UUID, policy: AdmissionPolicy, using: str) -> None:
    if not policy.accepting_here:
        raise SchedulerClosed("this replica is held closed (SCHEDULER_ACCEPTING=false)")
    with transaction.atomic(using=using):
        if lock_switch(using).closed:
            raise SchedulerClosed()
        rows = TaskRecord.objects.using(using)
        status = rows.filter(uuid=uuid).values_list("status", flat=True).first()
        if status is None:
            raise TaskNotFound(uuid)
        if status != Status.ERROR:
            raise WrongStatus(uuid, status, expected=Status.ERROR)
        if rows.filter(status=Status.QUEUED).count() >= policy.queue_size:
            raise QueueFull(policy.queue_size)
        rows.filter(uuid=uuid, status=Status.ERROR).update(
            status=Status.QUEUED,
            attempts=0,
            error="",
            result=None,
            result_size=None,
            started_at=None,
            finished_at=None,
            worker="",
            lease_owner="",
            lease_expires_at=None,
            dispatched_at=Now(),
        )
        publish_on_commit([uuid], using)
    log.info(
        "task %s: queued again by retry",
        uuid,
        extra={"task_uuid": uuid, "event": "retry"},
    )


def set_closed(closed: bool, using: str = "default") -> None:
    with transaction.atomic(using=using):
        switch = lock_switch(using)
        if switch.closed != closed:
            switch.closed = closed
            switch.changed_at = Now()
            switch.save(update_fields=["closed", "changed_at"])
            log.warning(
                "scheduler %s",
                "closed: new requests are refused, accepted tasks still run"
                if closed
                else "opened: accepting requests",
                extra={"event": "closed" if closed else "opened"},
            )
