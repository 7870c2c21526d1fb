"""What a Celery worker's main process does at start and at shutdown.

Connected in ``AppConfig.ready()``; the signals only fire in worker processes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import signals
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import leases, orphans, shutdown
from .config import scheduler_config
from .keeper import LeaseKeeper
from .processors import load_processor

log = logging.getLogger(__name__)

_keeper: LeaseKeeper | None = None
_main_pid: int | None = None


@signals.worker_init.connect
def on_worker_init(**_: Any) -> None:
    # A worker that cannot build its processor would claim tasks only to fail them:
    # refuse to start instead, with the reason, so that the deployment shows it.
    try:
        load_processor(scheduler_config().processor)
    except ImproperlyConfigured as exc:
        log.critical("worker cannot start: %s", exc)
        raise SystemExit(f"worker cannot start: {exc}") from exc
    # Before the pool forks: the children inherit the boot id and the shutdown flag.
    leases.new_boot()
    shutdown.prepare()
    orphans.prepare_parent()
    global _main_pid
    _main_pid = os.getpid()


@signals.worker_process_init.connect
def on_worker_process_init(**_: Any) -> None:
    if _main_pid is not None:
        orphans.bind_child_to_parent(_main_pid)


@signals.worker_ready.connect
def on_worker_ready(**_: Any) -> None:
    global _keeper
    heartbeat = settings.SCHEDULER_WORKER_HEARTBEAT_FILE
    _keeper = LeaseKeeper(heartbeat=Path(heartbeat) if heartbeat else None)
    _keeper.start()


@signals.worker_shutting_down.connect
def on_worker_shutting_down(**_: Any) -> None:
    # The keeper goes on renewing the leases of the tasks still running; the children
    # only stop taking new ones.
    log.warning(
        "worker shutting down: running tasks finish, queued ones stay for others"
    )
    shutdown.request()


@signals.worker_shutdown.connect
def on_worker_shutdown(**_: Any) -> None:
    if _keeper is not None:
        _keeper.stop()
        _keeper.join(timeout=5)
