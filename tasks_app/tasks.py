"""The Celery task: a wake-up that claims a slot and runs tasks while there are some."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import dispatch, leases, pool_watchdog, runner, shutdown
from .config import scheduler_config
from .dispatch import RUN_TASK
from .processors import load_processor

log = logging.getLogger(__name__)

UNREACHABLE_PAUSE_SECONDS = 1.0

NOTHING_TO_RUN = "nothing to run: the task is taken or finished, or no slot is free"


@shared_task(name=RUN_TASK, bind=True)
def run_task(self: Any, uuid: str) -> dict[str, list[str]] | str:
    """Run task ``uuid`` if it is still queued and a slot is free, then the next ones.

    A message whose task is already processing under a live lease, finished, or waiting
    for a slot runs nothing and stores no Celery result; the database decides, not the
    message.
    """
    config = scheduler_config()
    # Built before any claim: a processor that cannot be built must not hold a slot.
    processor = load_processor(config.processor)
    worker = f"{self.request.hostname or 'worker'} pid {os.getpid()}"
    leased_since = time.monotonic()
    try:
        claim = leases.claim(
            uuid,
            worker=worker,
            num_workers=config.num_workers,
            lease_seconds=config.lease_seconds,
            reserve_seconds=leases.RESERVE_SECONDS,
        )
    except (OperationalError, InterfaceError) as exc:
        self.request.ignore_result = True  # the result backend is as unreachable
        return _unreachable(uuid, exc)
    if claim is None:
        # No database write for a message that did nothing: Celery reads this flag
        # when it stores the return value. Returning, rather than raising Ignore:
        # Celery's tracer keeps a raised exception and its traceback in a reference
        # cycle with its own frames, 120 to 350 KiB of garbage a message that only a
        # full collection frees, and a pool child inherits so many objects that it runs
        # one every few thousand messages; the children grew without bound.
        self.request.ignore_result = True
        return NOTHING_TO_RUN
    ran = runner.run(
        claim,
        processor,
        worker=worker,
        lease_seconds=config.lease_seconds,
        should_stop=shutdown.requested,
        num_workers=config.num_workers,
        reserve_seconds=leases.RESERVE_SECONDS,
        leased=pool_watchdog.LeaseWindow.confirmed_now(claim.uuid, leased_since),
    )
    return {"ran": ran}


def _unreachable(uuid: str, exc: Exception) -> str:
    """The claim could not reach the database: give the wake-up back, and pause.

    The message goes back to the broker for another worker, and this pool process
    waits before it takes the next one: a worker cut off from the database would
    otherwise take every wake-up the moment it is published and drop it, while
    workers that can reach the database wait for messages that never come to them.
    """
    log.warning(
        "task %s: cannot reach the database to claim it (%s: %s); the wake-up goes "
        "back to the broker and this process pauses %g s",
        uuid,
        type(exc).__name__,
        str(exc).splitlines()[0] if str(exc) else "",
        UNREACHABLE_PAUSE_SECONDS,
        extra={"task_uuid": uuid, "event": "claim_unreachable"},
    )
    dispatch.publish([uuid])
    time.sleep(UNREACHABLE_PAUSE_SECONDS)
    return "the database was unreachable; the wake-up was published again"
