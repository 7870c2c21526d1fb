"""One thread per worker process that runs the scheduler's statements.

A pool process records the end of a task while it already runs the next one (see
``runner``), so its statements cannot run on the thread that calls the processor. They
all run on this one thread instead, the waited-for ones too: Django's connections
belong to a thread, and one thread keeps each pool process at one connection.

Made lazily in each process, so a pool child never inherits its parent's thread.
Celery's Django fix-up looks at the main thread's connections around each task; the
caller does it for this thread's (``django.db.close_old_connections``), or a connection
the database dropped would only be noticed by a failing statement.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_pid: int | None = None


def _thread() -> ThreadPoolExecutor:
    global _executor, _pid
    if _executor is None or _pid != os.getpid():
        _executor = ThreadPoolExecutor(1, thread_name_prefix="scheduler-db")
        _pid = os.getpid()
    return _executor


def submit(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Run ``fn`` on the database thread; its future."""
    return _thread().submit(fn, *args, **kwargs)


def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` on the database thread and wait for it."""
    return submit(fn, *args, **kwargs).result()
