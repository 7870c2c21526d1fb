"""Liveness and readiness: whether this process answers, and whether it should get traffic.

Readiness asks the database and the broker, and turns false once the web server starts
its shutdown, so that a load balancer stops sending requests before the process stops.
Closing the scheduler does not change readiness: a closed replica still answers reads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from django.db import connections

log = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2

_shutting_down = threading.Event()


def begin_shutdown() -> None:
    """Mark this process as shutting down; the web server's SIGTERM hook calls this."""
    if not _shutting_down.is_set():
        _shutting_down.set()
        log.warning(
            "shutting down: readiness now fails, requests in flight still finish",
            extra={"event": "shutting_down"},
        )


def is_shutting_down() -> bool:
    return _shutting_down.is_set()


def reset_shutdown() -> None:
    """Forget a shutdown: only for tests, which share one process."""
    _shutting_down.clear()


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database(using: str = "default") -> Check:
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready", never a 500
        return Check("database", False, f"{type(exc).__name__}: {exc}")
    return Check("database", True, "ok")


def check_broker(timeout_seconds: int = BROKER_TIMEOUT_SECONDS) -> Check:
    """Open one connection to the broker, with no retries.

    ``celery inspect ping`` would need a live worker and a broadcast round trip; the
    web process only needs to know that it can publish.
    """
    from scheduler_project.celery import app

    try:
        with app.connection_for_write(connect_timeout=timeout_seconds) as connection:
            connection.ensure_connection(max_retries=0, timeout=timeout_seconds)
    except Exception as exc:  # kombu raises transport-specific errors
        return Check("broker", False, f"{type(exc).__name__}: {exc}")
    return Check("broker", True, "ok")


def readiness_checks() -> list[Check]:
    shutdown = Check(
        "shutdown",
        not is_shutting_down(),
        "shutting down" if is_shutting_down() else "running",
    )
    return [shutdown, check_database(), check_broker()]
