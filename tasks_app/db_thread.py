"""A thread per pool process for the hand-overs that overlap the next processor call.

A pool process records the end of a task while it already runs the next one (see
``runner``), so that write cannot run on the thread that calls the processor. It runs
on this thread, on a connection of its own (Django's connections belong to a thread):
a pool process that runs tasks back to back holds two connections. The claims and the
hand-overs that are waited for stay on the calling thread, because a hop to another
thread and back costs a wake-up of each, which a wake-up's way to the processor would
pay twice.

Made lazily in each process, so a pool child never inherits its parent's thread.
Celery's Django fix-up looks after the main thread's connections; each job here calls
``look_at_connections`` for this thread's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

P = ParamSpec("P")
T = TypeVar("T")

# A connection used this recently, with no error since, is not health-checked again:
# Django's check is a round trip of its own (SELECT 1), and hand-overs come one a task.
IDLE_CHECK_SECONDS = 1.0

_executor: ThreadPoolExecutor | None = None
_pid: int | None = None
_last_used = 0.0  # time.monotonic() when the thread last finished a call


def _thread() -> ThreadPoolExecutor:
    global _executor, _pid
    if _executor is None or _pid != os.getpid():
        _executor = ThreadPoolExecutor(1, thread_name_prefix="scheduler-db")
        _pid = os.getpid()
    return _executor


def _timed(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    global _last_used
    try:
        return fn(*args, **kwargs)
    finally:
        _last_used = time.monotonic()


def submit(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Run ``fn`` on the database thread; its future."""
    return _thread().submit(_timed, fn, *args, **kwargs)


def look_at_connections() -> None:
    """Django's checks of this thread's connections, unless the thread just used them.

    Call it on the database thread before a job's first statement. A connection with
    an error since its last check, past ``CONN_MAX_AGE``, or idle for over
    ``IDLE_CHECK_SECONDS`` is checked (``CONN_HEALTH_CHECKS``) or replaced.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    now = time.monotonic()
    if (
        connection.errors_occurred
        or now - _last_used > IDLE_CHECK_SECONDS
        or (connection.close_at is not None and now >= connection.close_at)
    ):
        close_old_connections()
