"""A flag the worker's main process raises when it starts a warm shutdown.

Pool children inherit it when they are forked, and look at it between two tasks: a child
that would otherwise hand its slot to the next queued task stops instead, so a SIGTERM
waits for the running tasks only, and leaves the queue to the other workers.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event

_requested: Event | None = None


def prepare() -> None:
    """Create the flag; called in the main process before the pool forks."""
    global _requested
    if _requested is None:
        _requested = multiprocessing.get_context("fork").Event()


def request() -> None:
    if _requested is not None:
        _requested.set()


def requested() -> bool:
    return _requested is not None and _requested.is_set()
