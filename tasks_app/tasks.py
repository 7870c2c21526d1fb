"""The Celery task: a wake-up that claims a slot and runs tasks while there are some."""

from __future__ import annotations

import os
from typing import Any

from celery import shared_task

from . import leases, runner, shutdown
from .config import scheduler_config
from .dispatch import RUN_TASK
from .processors import load_processor

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
    claim = leases.claim(
        uuid,
        worker=worker,
        num_workers=config.num_workers,
        lease_seconds=config.lease_seconds,
    )
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
    )
    return {"ran": ran}
