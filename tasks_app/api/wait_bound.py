"""A per-process bound on the ``?wait`` long polls held at once.

A held wait keeps its server thread. gunicorn's gthread worker queues every request of
a process, probes included, for one of its ``threads``: with all of them holding waits,
/healthz and /readyz time out and the pod is taken out of its Service, then restarted.
Past the bound, a wait answers at once with the task as it stands, as one that ran out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WaitBound:
    """At most ``max_waits`` waits held at once in this process; ``None``: no bound."""

    def __init__(self, max_waits: int | None) -> None:
        self.max_waits = max_waits
        self._permits = None if max_waits is None else threading.Semaphore(max_waits)

    @contextmanager
    def hold(self) -> Iterator[bool]:
        """Yield whether the caller may wait; a permit taken is given back on exit.

        Never blocks: a request queued for a permit would hold its thread all the same.
        """
        if self._permits is None:
            yield True
            return
        acquired = self._permits.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                self._permits.release()


def max_waits_for_threads(threads: int) -> int:
    """The waits a process of ``threads`` server threads may hold at once.

    A quarter of the threads, at least one, stays free for the probes and the short
    requests: 6 of gunicorn.conf.py's default 8. A single-threaded process holds none.
    """
    return max(0, threads - max(1, threads // 4))


# Unbounded until the server says how many threads it has: runserver and the test
# client start a thread per connection, or none, so a wait there starves nothing.
_bound = WaitBound(None)


def set_bound(max_waits: int | None) -> None:
    """Bound this process's waits; gunicorn.conf.py calls it in each worker."""
    global _bound
    _bound = WaitBound(max_waits)


def current() -> WaitBound:
    return _bound
