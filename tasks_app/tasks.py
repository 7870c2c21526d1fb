"""The Celery task: a wake-up that claims a slot and runs tasks while there are some."""

from __future__ import annotations

import os
from typing import Any

from celery import shared_task
from celery.exceptions import Ignore

from . import leases, runner, shutdown
from .config import scheduler_config
from .dispatch import RUN_TASK
from .processors import load_processor

NOTHING_TO_RUN = "nothing to run: the task is taken or finished, or no slot is free"


@shared_task(name=RUN_TASK, bind=True)
def run_task(self: Any, uuid: str) -> dict[str, list[str]]:
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
        # Ignore stores no result (no database write for a message that did nothing),
        # but sends no event either, and Flower would show the message as started
        # forever: say that it ended.
        self.send_event("task-succeeded", result=NOTHING_TO_RUN, runtime=0.0)
        raise Ignore()
    ran = runner.run(
        claim,
        processor,
        worker=worker,
        lease_seconds=config.lease_seconds,
        should_stop=shutdown.requested,
    )
    return {"ran": ran}
