"""What a Celery worker's main process does at start and at shutdown.

Connected in ``AppConfig.ready()``; the signals only fire in worker processes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import concurrency, signals
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import leases, orphans, pool_watchdog, shutdown
from .config import scheduler_config
from .keeper import LeaseKeeper
from .processors import load_processor

log = logging.getLogger(__name__)

# Celery's names of its pools (-P), by the class each names; celery-types omits it.
POOL_ALIASES: dict[str, str | None] = concurrency.ALIASES  # type: ignore[attr-defined]

_keeper: LeaseKeeper | None = None
_main_pid: int | None = None


@signals.worker_init.connect
def on_worker_init(sender: Any = None, **_: Any) -> None:
    # The lease keeper enforces time limits and fences by killing pool processes; a
    # pool of threads (threads, solo, gevent, eventlet) has none to kill, so the cap
    # would not hold there. Refuse it, naming it, rather than run without the promise.
    pool = getattr(sender, "pool_cls", "")
    path = pool if isinstance(pool, str) else f"{pool.__module__}:{pool.__name__}"
    pool_name = next(
        (alias for alias, target in POOL_ALIASES.items() if target == path), path
    )
    if pool_name and pool_name != "prefork":
        log.critical(
            "worker cannot start: the %s pool runs tasks inside this process, where a "
            "hung or fenced call cannot be stopped; use the prefork pool (-P prefork)",
            pool_name,
        )
        raise SystemExit(f"worker cannot start with the {pool_name} pool")
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
    pool_watchdog.prepare()
    global _main_pid
    _main_pid = os.getpid()


@signals.worker_process_init.connect
def on_worker_process_init(**_: Any) -> None:
    if _main_pid is not None:
        orphans.bind_child_to_parent(_main_pid)
        pool_watchdog.watch(scheduler_config().lease_seconds)


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
