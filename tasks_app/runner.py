"""Running claimed tasks through the processor, slot after slot, until the queue is empty.

This is what a worker process does with a slot: run the task it claimed, record the
outcome, and hand the slot straight to the next queued task without a broker round trip.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future

from django.conf import settings
from django.db import connections

from . import db_thread, leases, pool_watchdog
from .interfaces import Processor
from .models import Status

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 10_000

# A slot whose last task took less than this neither runs ahead nor reserves: its
# hand-over is waited for, as without reservations. Short tasks hide little of the
# write, and each reservation is one more write of a queued row: 4 slots draining
# no-op tasks managed about 800 a second reserving at every hand-over, and 1,800 so.
RUN_AHEAD_AFTER_SECONDS = 0.01


def execute(processor: Processor, claim: leases.Claim) -> leases.Outcome:
    """Call the processor once; an exception becomes the task's error text."""
    try:
        result = processor.process(claim.request)
    except Exception as exc:  # the processor is user code: any failure is the task's
        message = f"{type(exc).__name__}: {exc}"
        return leases.Outcome(Status.ERROR, error=message[:MAX_ERROR_CHARS])
    if not isinstance(result, bytes | bytearray | memoryview):
        return leases.Outcome(
            Status.ERROR,
            error=f"the processor returned {type(result).__name__}, not bytes",
        )
    limit = settings.SCHEDULER_MAX_RESULT_BYTES
    if len(result) > limit:
        return leases.Outcome(
            Status.ERROR,
            error=f"the result of {len(result)} bytes is over the limit of {limit} "
            "bytes (SCHEDULER_MAX_RESULT_BYTES); it was not stored",
        )
    return leases.Outcome(Status.DONE, result=bytes(result))


def run(
    first: leases.Claim,
    processor: Processor,
    *,
    worker: str,
    lease_seconds: float,
    should_stop: Callable[[], bool],
    num_workers: int = 0,
    reserve_seconds: float = 0.0,
    using: str = "default",
    leased: pool_watchdog.LeaseWindow | None = None,
) -> list[str]:
    """Run ``first`` and then each task the slot is handed to; return their UUIDs.

    A task the slot has reserved (``leases.Reservation``, made with ``reserve_seconds``
    when every slot is busy) starts the moment the one before it ends, while
    ``db_thread`` records that end and makes the hand-over; its answer is awaited
    only when the reserved task ends in turn. The database writes then never stand
    between two processor calls. Every write is guarded by the lease, so an answer
    other than expected (the lease of the task before was lost, a statement failed)
    costs at most a run whose outcome is not recorded, never one recorded twice.

    ``leased`` times the claim of ``first`` for ``pool_watchdog`` (by default, from
    now, which is later than the claim: only for callers that do not run under a
    keeper).
    """
    ran: list[str] = []
    current = first
    window = leased or pool_watchdog.LeaseWindow.confirmed_now(first.uuid)
    # The hand-over that is starting ``current`` as it runs, when it ran ahead.
    handing_over: Future[leases.Claim | None] | None = None
    # Set when a hand-over's outcome is unknown: what this process holds when it stops
    # may then be a task that nothing runs.
    unsure = False

    def finish(
        claim: leases.Claim, outcome: leases.Outcome, duration: float, take_next: bool
    ) -> leases.Claim | None:
        return leases.finish(
            claim,
            outcome,
            take_next=take_next,
            worker=worker,
            lease_seconds=lease_seconds,
            using=using,
            duration_seconds=duration,
            num_workers=num_workers,
            reserve_seconds=(
                reserve_seconds if duration >= RUN_AHEAD_AFTER_SECONDS else 0.0
            ),
        )

    def finish_or_give_back(
        claim: leases.Claim, outcome: leases.Outcome, duration: float, take_next: bool
    ) -> leases.Claim | None:
        try:
            return finish(claim, outcome, duration, take_next)
        except Exception:
            _record_again_or_give_back(claim, outcome, worker, using)
            if take_next:
                _give_back_what_the_hand_over_started(claim, using)
            return None

    def hand_over(
        claim: leases.Claim,
        outcome: leases.Outcome,
        duration: float,
        ahead: pool_watchdog.LeaseWindow,
    ) -> leases.Claim | None:
        try:
            db_thread.look_at_connections()
            following = finish(claim, outcome, duration, True)
        except Exception:
            # Not knowing whether it committed, and the reserved task runs already on
            # this slot: ``claim`` must not be written alone, which would let the
            # slot go while that task runs on it. The whole hand-over again, on a new
            # connection: guarded by ``claim``'s lease, it does now what failed, or
            # it is refused because the first one committed (``claim`` recorded, the
            # reserved task started here). If this fails too, the caller goes on
            # under the lease the hand-over would have given, which the guard refuses
            # if it did not.
            log.warning(
                "task %s: the hand-over to the task running ahead failed; making it "
                "again",
                claim.uuid,
                exc_info=True,
                extra={"task_uuid": claim.uuid, "event": "hand_over_retry"},
            )
            connections[using].close()
            following = finish(claim, outcome, duration, True)
            if following is None and claim.reserved is not None:
                following = claim.reserved.as_started(leases.lease_owner())
        if following is not None and following.uuid == ahead.uuid:
            ahead.confirm()
        return following

    while True:
        pool_watchdog.running(window)
        started = time.monotonic()
        try:
            outcome = execute(processor, current)
        finally:
            pool_watchdog.idle()
        duration_seconds = time.monotonic() - started
        log.debug(
            "task %s: processor returned after %.3f s",
            current.uuid,
            duration_seconds,
            extra={"task_uuid": current.uuid, "event": "processed"},
        )
        ran.append(current.uuid)
        if handing_over is not None:
            try:
                handed = handing_over.result()
            except Exception:
                handed = current  # unknown: the lease guard decides
                unsure = True
            handing_over = None
            if handed is None or handed.uuid != current.uuid:
                _ran_without_slot(current)
                if handed is None:
                    break
                current = handed
                window = pool_watchdog.LeaseWindow.confirmed_now(
                    handed.uuid, window.since
                )
                continue
            current = handed
        ahead = current.reserved
        if (
            ahead is not None
            and duration_seconds >= RUN_AHEAD_AFTER_SECONDS
            and ahead.fresh()
            and not should_stop()
        ):
            # Its lease begins when the hand-over commits, after this.
            window = pool_watchdog.LeaseWindow(ahead.uuid, time.monotonic())
            handing_over = db_thread.submit(
                hand_over, current, outcome, duration_seconds, window
            )
            current = ahead.as_started(leases.lease_owner())
            continue
        since = time.monotonic()
        following = finish_or_give_back(
            current, outcome, duration_seconds, not should_stop()
        )
        if following is None:
            break
        current = following
        window = pool_watchdog.LeaseWindow.confirmed_now(following.uuid, since)
    if unsure:
        _give_back_what_the_hand_over_started(current, using)
    return ran


def _ran_without_slot(claim: leases.Claim) -> None:
    log.warning(
        "task %s: ran ahead as this process's reserved task, but the hand-over did "
        "not give it to this process (the lease of the task before it was lost, or "
        "its write failed); this outcome is not recorded, and the task runs again",
        claim.uuid,
        extra={"task_uuid": claim.uuid, "event": "ran_without_slot"},
    )


def _give_back_what_the_hand_over_started(claim: leases.Claim, using: str) -> None:
    """A hand-over failed, perhaps after its commit: let go of what it may have started.

    If only the reply was lost, the next task is processing under this process's
    lease while this process, which never learnt of it, goes idle. Nothing here runs
    now, so whatever this owner holds is given back. If the database cannot be reached
    for that either, this process exits: its keeper ends the leases of a process that
    is gone.
    """
    try:
        connections[using].close()
        given = leases.give_back_all(
            claim.owner, "the reply to the hand-over that started it was lost", using
        )
    except Exception:
        log.critical(
            "task %s: the hand-over after it failed, and what it may have started "
            "cannot be given back; this pool process exits so that its lease ends",
            claim.uuid,
            exc_info=True,
            extra={"task_uuid": claim.uuid, "event": "hand_over_lost_exit"},
        )
        os._exit(70)
    for uuid in given:
        log.warning(
            "task %s: started by a hand-over whose reply was lost; given back to the "
            "queue",
            uuid,
            extra={"task_uuid": uuid, "event": "hand_over_reply_lost"},
        )


def _record_again_or_give_back(
    claim: leases.Claim, outcome: leases.Outcome, worker: str, using: str
) -> None:
    """The outcome could not be recorded: try once more, else put the task back.

    The usual cause is a connection the database dropped. The write is guarded by the
    lease, so writing it again on a fresh connection is safe, and keeps the result.
    Failing that, the task goes straight back to the queue in one guarded update; only
    ending the lease would not do, as this process's keeper could renew it before any
    keeper recovers it. If the database cannot be reached at all, this process exits,
    and its keeper ends its lease once the database answers.
    """
    log.warning(
        "task %s: the outcome of attempt %d could not be recorded; trying once more",
        claim.uuid,
        claim.attempt,
        exc_info=True,
        extra={"task_uuid": claim.uuid, "event": "outcome_retry"},
    )
    try:
        connections[using].close()
        leases.finish(
            claim, outcome, take_next=False, worker=worker, lease_seconds=0, using=using
        )
        return
    except Exception:
        log.exception(
            "task %s: the outcome of attempt %d is lost; the task goes back to the "
            "queue and runs again",
            claim.uuid,
            claim.attempt,
            extra={"task_uuid": claim.uuid, "event": "outcome_lost"},
        )
    try:
        connections[using].close()
        leases.give_back(claim, "its outcome could not be recorded", using=using)
    except Exception:
        log.critical(
            "task %s: cannot reach the database to give the task back; this pool "
            "process exits so that its lease ends",
            claim.uuid,
            extra={"task_uuid": claim.uuid, "event": "outcome_lost_exit"},
        )
        os._exit(70)
