"""Slots and leases: the global concurrency cap and the recovery of dead workers' tasks.

A slot is in use while a task is ``processing``; so the number of processing tasks is
the number of slots in use, everywhere at once, and taking a slot means moving a task
to processing while fewer than ``num_workers`` are. A processing task carries a lease:
an owner (``<boot id>:<pid>`` of the process running it) and an expiry on the database
clock. The worker's main process renews it (see ``keeper``); once it expires, the task
goes back to the queue and its slot is free again.

Three moves change the number of slots in use. A claim takes the slot lock, so that no
two claims count the same free slot:

- ``claim``: lock, count, and take a queued task if a slot is free;
- ``finish``: record the outcome; then hand the slot straight to the next queued task
  (the count does not change, so no lock), or, when the queue looks empty, lock and
  look again before letting the slot go;
- ``recover_expired`` and ``fail_running``: end tasks whose lease ran out or whose time
  limit passed; a task queued again gets a message of its own.

An admission that finds every slot busy publishes no message: a finishing worker takes
its task. So a move that lets a slot go without handing it over or queuing its task
again (a stopping worker's finish, a time limit, attempts exhausted) publishes a
message for the oldest queued task, under the slot lock, which that admission holds
from its count of busy slots to its commit: either the admission sees the slot free,
or the move sees its task.

While every slot is busy, a claim or hand-over on PostgreSQL also reserves the next
queued task for its process, for ``RESERVE_SECONDS`` (see ``Reservation``): it stays
queued, and no other move takes it until its reserver's hand-over does or it lapses.
That lets the reserver start it before the end of the current task is written
(``runner``). A move that lets a slot go gives its reservation back; a lapsed one is
published again by ``redispatch_stale``.

On PostgreSQL, ``claim`` and ``finish`` are one call each of a PL/pgSQL function
(migrations 0005 and 0006), through ``sql``; other databases take the ORM path below,
which does the same in several statements and makes no reservations.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
import uuid as uuid_module
from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction
from django.db.models import BooleanField, Case, Q, QuerySet, When
from django.db.models.functions import Now

from . import sql
from .config import scheduler_config
from .dispatch import publish_on_commit
from .metrics import counters
from .models import SlotLock, Status, TaskEvent, TaskRecord

log = logging.getLogger(__name__)

# Set once per worker boot in the main process and inherited by its forked children, so
# that a restarted container whose processes reuse the same pids never renews the
# leases of its previous life.
_boot_id = uuid_module.uuid4().hex[:16]


def boot_id() -> str:
    return _boot_id


def new_boot() -> str:
    """Start a new lease identity (called in a worker's main process before it forks)."""
    global _boot_id
    _boot_id = uuid_module.uuid4().hex[:16]
    return _boot_id


def lease_owner(pid: int | None = None) -> str:
    return f"{_boot_id}:{pid if pid is not None else os.getpid()}"


# How long a reservation holds its task for the reserving process (see
# ``Reservation``); 0 makes none. Tasks up to half of it run back to back. Short,
# because a reserved task waits for its reserver's current task: one that turns out
# long lets the reservation lapse, and a slot freed meanwhile waits for that.
RESERVE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """The queued task this process will run next, held for it for a short while.

    Made by a claim or hand-over when every slot is busy (migration 0006): no other
    process takes the task until the reservation lapses, ``RESERVE_SECONDS`` after the
    call, on the database's clock. The process may start it before the database has
    recorded the end of the current task while ``fresh`` holds: half that time measured
    here from before the call was sent, which leaves the other half for the write that
    starts it to arrive.
    """

    uuid: str
    hash: str
    attempts: int
    request: bytes
    fresh_until: float  # time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() < self.fresh_until

    def as_started(self, owner: str) -> Claim:
        """The claim the hand-over that takes this reservation makes."""
        return Claim(self.uuid, self.hash, self.attempts + 1, owner, self.request)


@dataclass(frozen=True, slots=True)
class Claim:
    """A task this process holds a slot for, in the attempt it started."""

    uuid: str
    hash: str
    attempt: int
    owner: str
    request: bytes
    reserved: Reservation | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    result: bytes | None = None
    error: str = ""


def _took(duration_seconds: float | None) -> str:
    return "time unknown" if duration_seconds is None else f"{duration_seconds:.3f} s"


def _expiry(lease_seconds: float) -> Now:
    return Now() + dt.timedelta(seconds=lease_seconds)  # type: ignore[return-value]


def _started(
    uuid: str, digest: str, attempt: int, owner: str, request: bytes, worker: str
) -> Claim:
    log.info(
        "task %s: processing (attempt %d) on %s",
        uuid,
        attempt,
        worker,
        extra={"task_uuid": uuid, "event": "processing", "worker": worker},
    )
    return Claim(uuid, digest, attempt, owner, request)


def _refused(claim: Claim) -> None:
    log.warning(
        "task %s: outcome of attempt %d discarded: its lease was lost and the "
        "task went back to the queue, where another attempt records it",
        claim.uuid,
        claim.attempt,
        extra={"task_uuid": claim.uuid, "event": "late_write_refused"},
    )


def _recorded(
    claim: Claim,
    outcome: Outcome,
    worker: str,
    duration_seconds: float | None,
    using: str,
) -> None:
    log.info(
        "task %s: %s (attempt %d on %s, %s)%s",
        claim.uuid,
        outcome.status,
        claim.attempt,
        worker,
        _took(duration_seconds),
        f": {outcome.error[:200]}" if outcome.error else "",
        extra={
            "task_uuid": claim.uuid,
            "event": str(outcome.status),
            "worker": worker,
            "attempt": claim.attempt,
            "duration_seconds": duration_seconds,
        },
    )
    # Counted once the outcome is committed: a rolled-back write recorded nothing. In
    # autocommit (the PostgreSQL path) the commit has happened, and this runs now.
    transaction.on_commit(
        functools.partial(
            counters.count_finished, outcome.status.value, duration_seconds
        ),
        using=using,
    )


def _wake(uuids: list[str], using: str) -> None:
    """Publish on commit a message for each of these queued tasks: a slot was let go.

    Call it under the slot lock, after the write that lets the slot go (see the
    module docstring for why that makes it exact).
    """
    for uuid in uuids:
        log.debug(
            "task %s: queued while a slot was let go; a message wakes a worker",
            uuid,
            extra={"task_uuid": uuid, "event": "woken"},
        )
    publish_on_commit(uuids, using)


def _oldest_queued(
    count: int, using: str, besides: list[str] | None = None
) -> list[str]:
    if count <= 0:
        return []
    rows = TaskRecord.objects.using(using).filter(_not_reserved(), status=Status.QUEUED)
    if besides:
        rows = rows.exclude(uuid__in=besides)
    oldest = rows.order_by("created_at").values_list("uuid", flat=True)[:count]
    return [str(uuid) for uuid in oldest]


def _not_reserved() -> Q:
    """Queued rows no live reservation holds (only PostgreSQL's functions make any).

    Keep in step with ``_SURVEY``, which asks the same in SQL.
    """
    return (
        Q(lease_owner="")
        | Q(lease_expires_at__isnull=True)
        | Q(lease_expires_at__lte=Now())
    )


def _queued(rows: QuerySet[TaskRecord], preferred: str | None) -> TaskRecord | None:
    """The preferred task if still queued, else the oldest queued one, row-locked."""
    locked = (
        rows.select_for_update(skip_locked=True)
        .filter(_not_reserved())
        .only("uuid", "hash", "attempts", "request")
    )
    if preferred is not None:
        row = locked.filter(uuid=preferred, status=Status.QUEUED).first()
        if row is not None:
            return row
    return locked.filter(status=Status.QUEUED).order_by("created_at").first()


def _start(row: TaskRecord, worker: str, lease_seconds: float, using: str) -> Claim:
    owner = lease_owner()
    attempt = row.attempts + 1
    TaskRecord.objects.using(using).filter(uuid=row.uuid).update(
        status=Status.PROCESSING,
        attempts=attempt,
        started_at=Now(),
        finished_at=None,
        worker=worker,
        lease_owner=owner,
        lease_expires_at=_expiry(lease_seconds),
    )
    return _started(str(row.uuid), row.hash, attempt, owner, bytes(row.request), worker)


def lock_slots(using: str) -> None:
    rows = SlotLock.objects.using(using)
    if not rows.select_for_update().filter(pk=1).exists():
        # A migration makes the row; if it was deleted, make it again, then lock it:
        # the row get_or_create returns after losing a race is not locked, and a claim
        # without the lock could count the slots beside another and pass the cap.
        rows.get_or_create(pk=1)
        rows.select_for_update().get(pk=1)


def slots_in_use(using: str = "default") -> int:
    return TaskRecord.objects.using(using).filter(status=Status.PROCESSING).count()


# Each function returns one row: (task_uuid, task_hash, task_attempts, task_request)
# and a reservation (reserved_uuid, reserved_hash, reserved_attempts, reserved_request)
# for a claim, all null when it took nothing; (recorded, next_uuid, next_hash,
# next_attempts, next_request, wake_uuid) and a reservation for a finish. A request over
# the inline limit comes back null, to be read in chunks. Every parameter has a cast:
# psycopg picks a type from the Python value (a small int goes as smallint), and the
# call must resolve to the same function whatever the values.
CLAIM_CALL = (
    "SELECT * FROM scheduler_claim(%s::uuid, %s::integer, %s::text, %s::text, "
    "%s::double precision, %s::integer, %s::double precision)"
)
# ``{result}`` is the expression ``sql.bytes_argument`` gives for the result.
FINISH_CALL = (
    "SELECT * FROM scheduler_finish(%s::uuid, %s::integer, %s::text, %s::text, "
    "{result}, %s::text, %s::boolean, %s::uuid, %s::text, %s::text, "
    "%s::double precision, %s::integer, %s::integer, %s::double precision)"
)


def _reservation(
    row: tuple[Any, ...], sent: float, reserve_seconds: float
) -> Reservation | None:
    uuid, digest, attempts, request = row
    if uuid is None or request is None:
        return None
    return Reservation(
        str(uuid),
        digest,
        attempts,
        request,
        fresh_until=sent + reserve_seconds / 2,
    )


def claim(
    preferred: str | None,
    *,
    worker: str,
    num_workers: int,
    lease_seconds: float,
    using: str = "default",
    reserve_seconds: float = 0.0,
) -> Claim | None:
    """Take a free slot and a queued task, or ``None`` when no slot or no task is free.

    With ``reserve_seconds`` (PostgreSQL only), the claim also reserves the next task
    for this process when every slot is busy (see ``Reservation``).
    """
    if sql.is_postgresql(using):
        return _claim_in_one_call(
            preferred, worker, num_workers, lease_seconds, using, reserve_seconds
        )
    with transaction.atomic(using=using):
        lock_slots(using)
        rows = TaskRecord.objects.using(using)
        if rows.filter(status=Status.PROCESSING).count() >= num_workers:
            return None
        row = _queued(rows, preferred)
        if row is None:
            return None
        return _start(row, worker, lease_seconds, using)


def _claim_in_one_call(
    preferred: str | None,
    worker: str,
    num_workers: int,
    lease_seconds: float,
    using: str,
    reserve_seconds: float,
) -> Claim | None:
    owner = lease_owner()
    sent = time.monotonic()
    ((uuid, digest, attempt, request, *reserved),) = sql.fetch(
        using,
        CLAIM_CALL,
        (
            preferred,
            num_workers,
            owner,
            worker,
            lease_seconds,
            sql.INLINE_BYTES,
            reserve_seconds,
        ),
    )
    if uuid is None:
        return None
    request = _whole_request(using, str(uuid), request)
    started = _started(str(uuid), digest, attempt, owner, request, worker)
    return replace(
        started, reserved=_reservation(tuple(reserved), sent, reserve_seconds)
    )


def _whole_request(using: str, uuid: str, returned: bytes | None) -> bytes:
    """The request the call returned, or, when it was too large to, read in chunks.

    In one piece, libpq would hold the row twice (its input buffer and its result)
    beside the bytes psycopg makes of it. The task is ours by now, and a request
    never changes, so reading it after the commit reads the same bytes.
    """
    if returned is not None:
        return returned
    return sql.read_bytes(using, "request", uuid)


def finish(
    claim: Claim,
    outcome: Outcome,
    *,
    take_next: bool,
    worker: str,
    lease_seconds: float,
    using: str = "default",
    duration_seconds: float | None = None,
    num_workers: int = 0,
    reserve_seconds: float = 0.0,
) -> Claim | None:
    """Record the outcome of ``claim``; return the next task this slot runs, if any.

    ``duration_seconds`` is how long the processor call took, for the log line and the
    processing-time histogram. Without ``take_next`` (the worker is stopping) the slot
    is let go, with ``claim``'s reservation, and the oldest queued task, if any, gets a
    message. With it, the slot goes to ``claim``'s reservation if this process still
    holds it, else to the oldest queued task; with ``reserve_seconds`` (PostgreSQL
    only), the hand-over reserves the task after it when every slot is busy, against
    ``num_workers``.

    The write is guarded by the lease: if the task is no longer processing in this very
    attempt under this owner (its lease expired and it went back to the queue), the
    outcome is discarded, and the slot is not ours to pass on.
    """
    if sql.is_postgresql(using):
        return _finish_in_one_call(
            claim,
            outcome,
            take_next,
            worker,
            lease_seconds,
            using,
            duration_seconds,
            num_workers,
            reserve_seconds,
        )
    rows = TaskRecord.objects.using(using)
    with transaction.atomic(using=using):
        recorded = rows.filter(
            uuid=claim.uuid,
            status=Status.PROCESSING,
            attempts=claim.attempt,
            lease_owner=claim.owner,
        ).update(
            status=outcome.status,
            result=outcome.result,
            result_size=len(outcome.result) if outcome.result is not None else None,
            error=outcome.error,
            finished_at=Now(),
            lease_owner="",
            lease_expires_at=None,
        )
        if not recorded:
            _refused(claim)
            return None
        _recorded(claim, outcome, worker, duration_seconds, using)
        if not take_next:
            lock_slots(using)
            _wake(_oldest_queued(1, using), using)
            return None

        row = _queued(rows, None)
        if row is None:
            # The queue looks empty; a task admitted a moment ago may have had its
            # message refused by a claim that saw this slot still busy, or none at all.
            # Under the slot lock that admission or claim has either committed (and
            # its task is visible now) or not counted yet (and it will see this slot
            # free).
            lock_slots(using)
            row = _queued(rows, None)
        if row is None:
            return None
        return _start(row, worker, lease_seconds, using)


def _finish_in_one_call(
    claim: Claim,
    outcome: Outcome,
    take_next: bool,
    worker: str,
    lease_seconds: float,
    using: str,
    duration_seconds: float | None,
    num_workers: int,
    reserve_seconds: float,
) -> Claim | None:
    next_owner = lease_owner()
    reserved = claim.reserved
    sent = time.monotonic()
    # A large result goes up in chunks, and the call then runs in the transaction that
    # holds them: what follows the block comes after its commit either way.
    with sql.bytes_argument(using, outcome.result) as (result, result_params):
        (
            (
                recorded,
                next_uuid,
                next_hash,
                next_attempt,
                next_request,
                wake_uuid,
                *after,
            ),
        ) = sql.fetch(
            using,
            FINISH_CALL.format(result=result),
            (
                claim.uuid,
                claim.attempt,
                claim.owner,
                outcome.status.value,
                *result_params,
                outcome.error,
                take_next,
                reserved.uuid if reserved is not None else None,
                next_owner,
                worker,
                lease_seconds,
                sql.INLINE_BYTES,
                num_workers,
                reserve_seconds,
            ),
        )
    if not recorded:
        _refused(claim)
        return None
    _recorded(claim, outcome, worker, duration_seconds, using)
    if wake_uuid is not None:
        _wake([str(wake_uuid)], using)
    if next_uuid is None:
        return None
    next_request = _whole_request(using, str(next_uuid), next_request)
    started = _started(
        str(next_uuid), next_hash, next_attempt, next_owner, next_request, worker
    )
    return replace(started, reserved=_reservation(tuple(after), sent, reserve_seconds))


def renew(owners: list[str], lease_seconds: float, using: str = "default") -> int:
    """Extend the leases of the tasks these owners process; returns how many."""
    if not owners:
        return 0
    return (
        TaskRecord.objects.using(using)
        .filter(status=Status.PROCESSING, lease_owner__in=owners)
        .update(lease_expires_at=_expiry(lease_seconds))
    )


@dataclass(frozen=True, slots=True)
class HeldLease:
    uuid: str
    owner: str
    attempt: int
    over_time_limit: bool

    @property
    def pid(self) -> int:
        return int(self.owner.rsplit(":", 1)[1])


def held_by_boot(
    boot: str, time_limit_seconds: float, using: str = "default"
) -> list[HeldLease]:
    """The tasks this boot's processes hold, and whether each is past its time limit.

    Its filter is also in ``_SURVEY``: keep the two in step.
    """
    deadline = Now() - dt.timedelta(seconds=time_limit_seconds)
    rows = (
        TaskRecord.objects.using(using)
        .filter(status=Status.PROCESSING, lease_owner__startswith=f"{boot}:")
        .annotate(
            over=Case(
                When(started_at__lt=deadline, then=True),
                default=False,
                output_field=BooleanField(),
            )
        )
        .values_list("uuid", "lease_owner", "attempts", "over")
    )
    return [
        HeldLease(str(uuid), owner, attempts, over)
        for uuid, owner, attempts, over in rows
    ]


@dataclass(frozen=True, slots=True)
class KeeperSurvey:
    """What a lease keeper tick has to do, from one look at the task table."""

    held: list[HeldLease]
    # A processing task's lease ran out somewhere: ``recover_expired`` has work.
    expired: bool
    # A slot is free while a queued task may have lost its message, or holds a lapsed
    # reservation: ``redispatch_stale`` may have work.
    stale: bool
    # Tasks processing in the whole cluster. More than this process's cap means a
    # process with a larger SCHEDULER_NUM_WORKERS claimed some, or the cap was lowered.
    processing: int = 0


_PROCESSING = Status.PROCESSING.value
_QUEUED = Status.QUEUED.value
# The filters of held_by_boot, recover_expired and redispatch_stale, in one statement.
# The last two may say yes where their functions then find nothing (a row another
# replica has locked): they only decide whether those functions run.
_SURVEY = f"""
WITH processing AS (
    SELECT count(*) AS n FROM scheduler_task WHERE status = '{_PROCESSING}'
)
SELECT
    (SELECT coalesce(json_agg(json_build_array(
                uuid::text, lease_owner, attempts,
                coalesce(started_at < statement_timestamp()
                         - make_interval(secs => %s::float8), false))), '[]'::json)
       FROM scheduler_task
      WHERE status = '{_PROCESSING}' AND starts_with(lease_owner, %s::text)),
    EXISTS (SELECT 1 FROM scheduler_task
             WHERE status = '{_PROCESSING}' AND lease_expires_at < statement_timestamp()),
    CASE WHEN (SELECT n FROM processing) < %s::integer
         THEN EXISTS (
             SELECT 1 FROM scheduler_task
              WHERE status = '{_QUEUED}'
                AND (lease_owner = '' OR lease_expires_at IS NULL
                     OR lease_expires_at <= statement_timestamp())
                AND (dispatched_at < statement_timestamp()
                                     - make_interval(secs => %s::float8)
                     OR lease_owner <> ''))
         ELSE false
    END,
    (SELECT n FROM processing)
"""


def survey(
    boot: str,
    time_limit_seconds: float,
    num_workers: int,
    stale_seconds: float,
    using: str = "default",
) -> KeeperSurvey:
    """This boot's leases, whether recovery or redispatch has anything to do, and how
    many tasks the cluster is processing.

    Every worker's keeper asks this every tick. Built by the ORM, the three questions
    and the scan of /proc beside them cost 3.5 to 6 ms of Python a tick, holding the
    GIL of the worker's main process, which is also the thread that hands each task to
    a pool process: a task that arrived then waited for it. One statement of plain SQL
    costs a tenth of that. Other databases take the ORM path and always look.
    """
    if not sql.is_postgresql(using):
        return KeeperSurvey(
            held_by_boot(boot, time_limit_seconds, using),
            expired=True,
            stale=True,
            processing=TaskRecord.objects.using(using)
            .filter(status=Status.PROCESSING)
            .count(),
        )
    ((held, expired, stale, processing),) = sql.fetch(
        using,
        _SURVEY,
        (float(time_limit_seconds), f"{boot}:", int(num_workers), float(stale_seconds)),
    )
    return KeeperSurvey(
        [
            HeldLease(uuid, owner, attempts, over)
            for uuid, owner, attempts, over in held
        ],
        bool(expired),
        bool(stale),
        int(processing),
    )


def expire(uuid: str, owner: str, using: str = "default") -> int:
    """End a lease now: its process is known dead, so there is no point waiting.

    Its reservation, if any, ends too: the reconciler publishes that task at its next
    pass if a slot is free (its message is long gone), instead of after the lapse.
    """
    ended = (
        TaskRecord.objects.using(using)
        .filter(uuid=uuid, status=Status.PROCESSING, lease_owner=owner)
        .update(lease_expires_at=Now() - dt.timedelta(seconds=1))
    )
    _lapse_reservations(owner, using)
    counters.count_recovery("released", ended)
    return ended


def _lapse_reservations(owner: str, using: str) -> None:
    """End ``owner``'s reservation now; the reconciler publishes its task again."""
    TaskRecord.objects.using(using).filter(
        status=Status.QUEUED, lease_owner=owner
    ).update(lease_expires_at=Now() - dt.timedelta(seconds=1))


def give_back(
    claim: Claim, reason: str, using: str = "default", *, never_called: bool = False
) -> bool:
    """Put a task this process holds back in the queue now, guarded by its lease.

    A task given back spends its attempt, like one whose worker died; one that has
    spent SCHEDULER_MAX_ATTEMPTS ends in ``error`` by the keeper's recovery instead, so
    this only queues it when attempts remain, and else lets its lease lapse at once.
    ``never_called``: no processor call was made for this attempt (a start this process
    never learnt of), so the attempt is not counted.
    """
    rows = TaskRecord.objects.using(using).filter(
        uuid=claim.uuid,
        status=Status.PROCESSING,
        attempts=claim.attempt,
        lease_owner=claim.owner,
    )
    spent = claim.attempt - 1 if never_called else claim.attempt
    with transaction.atomic(using=using):
        if spent >= scheduler_config().max_attempts:
            # recover_expired writes the error text; it runs on the next keeper tick,
            # and no renewal can revive this lease, as the owner no longer matches.
            # The task stays processing until then, so its slot is not free yet:
            # recover_expired, which lets it go, wakes the queue.
            given = rows.update(lease_owner="", lease_expires_at=Now())
        else:
            given = rows.update(
                status=Status.QUEUED,
                attempts=spent,
                lease_owner="",
                lease_expires_at=None,
                dispatched_at=Now(),
            )
            publish_on_commit([claim.uuid], using)
        if given:
            TaskEvent.objects.using(using).create(
                task_id=claim.uuid,
                attempt=claim.attempt,
                event="given_back",
                detail=reason,
            )
    if given:
        log.warning(
            "task %s: given back on attempt %d: %s",
            claim.uuid,
            claim.attempt,
            reason,
            extra={"task_uuid": claim.uuid, "event": "given_back"},
        )
    return bool(given)


def give_back_all(owner: str, reason: str, using: str = "default") -> list[str]:
    """Put back every task ``owner`` holds or has reserved; the UUIDs given back.

    For a process that knows it runs nothing, yet may hold a task: a hand-over whose
    commit happened but whose reply was lost started the next task under this owner,
    and that task would otherwise stay processing, renewed by the keeper, until its
    time limit. Its processor was never called, so its attempt is not counted.
    """
    held = (
        TaskRecord.objects.using(using)
        .filter(status=Status.PROCESSING, lease_owner=owner)
        .values_list("uuid", "hash", "attempts")
    )
    given = [
        str(uuid)
        for uuid, digest, attempt in held
        if give_back(
            Claim(str(uuid), digest, attempt, owner, b""),
            reason,
            using,
            never_called=True,
        )
    ]
    _lapse_reservations(owner, using)
    return given


def fail_running(
    uuid: str, owner: str, attempt: int, error: str, using: str = "default"
) -> bool:
    """Put a processing task in ``error`` (its time limit passed); guarded like ``finish``."""
    with transaction.atomic(using=using):
        failed = (
            TaskRecord.objects.using(using)
            .filter(
                uuid=uuid, status=Status.PROCESSING, lease_owner=owner, attempts=attempt
            )
            .update(
                status=Status.ERROR,
                error=error,
                finished_at=Now(),
                lease_owner="",
                lease_expires_at=None,
            )
        )
        if failed:
            # The slot lock after the write, not before: a finish of this very task can
            # hold its row while it waits for the lock, and the lock taken first would
            # make a deadlock. Held from here to the commit, it still makes the wake-up
            # exact (see the module docstring).
            lock_slots(using)
            _wake(_oldest_queued(1, using), using)
            TaskEvent.objects.using(using).create(
                task_id=uuid, attempt=attempt, event="time_limit", detail=error
            )
    if failed:
        counters.count_finished(Status.ERROR.value)
        log.error(
            "task %s: error: %s",
            uuid,
            error,
            extra={"task_uuid": uuid, "event": "time_limit"},
        )
    return bool(failed)


def recover_expired(
    max_attempts: int, using: str = "default"
) -> list[tuple[str, Status]]:
    """Put back every processing task whose lease has run out; safe on every replica.

    A task whose worker died ``max_attempts`` times ends in ``error`` instead: a request
    that kills its worker must not take the workers down forever. Putting a task back is
    not an admission: it is never refused, whatever the queue holds.

    Its filter is also in ``_SURVEY``: keep the two in step.
    """
    recovered: list[tuple[str, Status]] = []
    rows = TaskRecord.objects.using(using)
    with transaction.atomic(using=using):
        expired = list(
            rows.select_for_update(skip_locked=True)
            .filter(status=Status.PROCESSING, lease_expires_at__lt=Now())
            .only("uuid", "attempts", "worker")
        )
        requeue: list[str] = []
        for row in expired:
            uuid = str(row.uuid)
            detail = f"worker {row.worker or 'unknown'} stopped renewing its lease"
            if row.attempts >= max_attempts:
                error = (
                    f"the worker died or was lost {row.attempts} times while processing "
                    f"this task (SCHEDULER_MAX_ATTEMPTS={max_attempts}); last: {detail}"
                )
                rows.filter(uuid=uuid).update(
                    status=Status.ERROR,
                    error=error,
                    finished_at=Now(),
                    lease_owner="",
                    lease_expires_at=None,
                )
                recovered.append((uuid, Status.ERROR))
                log.error(
                    "task %s: error: %s",
                    uuid,
                    error,
                    extra={"task_uuid": uuid, "event": "attempts_exhausted"},
                )
            else:
                rows.filter(uuid=uuid).update(
                    status=Status.QUEUED,
                    lease_owner="",
                    lease_expires_at=None,
                    dispatched_at=Now(),
                )
                requeue.append(uuid)
                recovered.append((uuid, Status.QUEUED))
                log.warning(
                    "task %s: lease expired on attempt %d (%s); queued again",
                    uuid,
                    row.attempts,
                    detail,
                    extra={"task_uuid": uuid, "event": "lease_expired"},
                )
            TaskEvent.objects.using(using).create(
                task_id=uuid,
                attempt=row.attempts,
                event="lease_expired",
                worker=row.worker,
                detail=detail,
            )
        publish_on_commit(requeue, using)
        ended = len(expired) - len(requeue)
        if ended:
            # A task queued again has its message; the slot of a task ended in error
            # goes to the oldest other queued task. The lock is taken only when there
            # is a slot to pass on, so that a quiet tick never waits behind claims.
            lock_slots(using)
            _wake(_oldest_queued(ended, using, besides=requeue), using)
    for _, status in recovered:
        counters.count_lease_expiry(status.value)
        if status == Status.ERROR:
            counters.count_finished(status.value)
    counters.count_recovery("requeued", len(requeue))
    return recovered


def redispatch_stale(
    num_workers: int, stale_seconds: float, using: str = "default"
) -> list[str]:
    """Publish again the oldest queued tasks when slots sit free while they wait.

    A queued task with a free slot should start within moments; one that has waited
    longer than ``stale_seconds`` since its last message most likely lost that message
    (a flushed or restarted broker, a failed publish, a crash of a serverless broker).
    A message too many is harmless: its claim finds nothing to do. A task whose
    reservation lapsed (its reserver's task ran long, or the reserver died) is
    published too, whenever its message was: nobody else would start it while slots
    sit free.

    Its filter is also in ``_SURVEY``: keep the two in step.
    """
    rows = TaskRecord.objects.using(using)
    free = num_workers - rows.filter(status=Status.PROCESSING).count()
    if free <= 0:
        return []
    cutoff = Now() - dt.timedelta(seconds=stale_seconds)
    with transaction.atomic(using=using):
        stale = list(
            rows.select_for_update(skip_locked=True)
            .filter(
                # A live reservation's task starts when its reserver's current one
                # ends, however old its message: not this pass's to publish.
                _not_reserved(),
                Q(dispatched_at__lt=cutoff) | ~Q(lease_owner=""),
                status=Status.QUEUED,
            )
            .order_by("created_at")
            .values_list("uuid", flat=True)[:free]
        )
        uuids = [str(uuid) for uuid in stale]
        if uuids:
            rows.filter(uuid__in=uuids).update(
                dispatched_at=Now(), lease_owner="", lease_expires_at=None
            )
            publish_on_commit(uuids, using)
    counters.count_recovery("redispatched", len(uuids))
    for uuid in uuids:
        log.warning(
            "task %s: queued with a free slot and no message seen, or its "
            "reservation lapsed; published again",
            uuid,
            extra={"task_uuid": uuid, "event": "redispatched"},
        )
    return uuids
