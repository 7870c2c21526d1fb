"""Running claimed tasks through the processor, slot after slot, until the queue is empty.

This is what a worker process does with a slot: run the task it claimed, record the
outcome, and hand the slot straight to the next queued task without a broker round trip.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connections

from . import leases
from .interfaces import Processor
from .models import Status

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 10_000


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
    using: str = "default",
) -> list[str]:
    """Run ``first`` and then each task the slot is handed to; return their UUIDs."""
    ran: list[str] = []
    claim: leases.Claim | None = first
    while claim is not None:
        current = claim
        started = time.monotonic()
        outcome = execute(processor, current)
        duration_seconds = time.monotonic() - started
        log.debug(
            "task %s: processor returned after %.3f s",
            current.uuid,
            duration_seconds,
            extra={"task_uuid": current.uuid, "event": "processed"},
        )
        ran.append(current.uuid)
        try:
            claim = leases.finish(
                current,
                outcome,
                take_next=not should_stop(),
                worker=worker,
                lease_seconds=lease_seconds,
                using=using,
                duration_seconds=duration_seconds,
            )
        except Exception:
            _record_again_or_give_back(current, outcome, worker, using)
            claim = None
    return ran


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
