"""Pool processes stop their own call when their lease keeper stops renewing it.

The lease keeper, in a worker's main process, kills a pool process whose lease is about
to lapse unrenewed (``keeper.LeaseKeeper._fence``). A main process that is frozen
(SIGSTOP, a debugger, a stuck event loop holding the GIL) can neither renew nor kill,
while its pool processes, which are not frozen with it, go on calling the processor:
the lease lapses, another worker starts the task again, and two calls of it run at
once. So each pool process also watches the clock itself. While it runs a task, a
thread of its own compares the time with the last renewal the keeper made, which the
keeper writes into memory shared since the fork, and with the moment this process's
own lease began; if neither is recent enough for the lease to be still live, the
process kills itself, a little before the lease can lapse.

Both times are taken before the statement they stand for was sent, and a lease starts
on the database's clock when its update runs (``clock_timestamp()``, migration 0008),
so each lease lasts at least ``lease_seconds`` past them. A renewal counts for a lease
only if it asked after the statement that began the lease had committed: one that asked
before never saw it. Linux's monotonic clock is one clock for every process of a
machine.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# Before the lease can lapse: two polls, and time for the kill to land.
MARGIN_SECONDS = 2 * POLL_SECONDS + 0.25

# The monotonic time before the keeper's last successful renewal asked which leases
# this worker holds: every lease it found then lasts past this plus the lease time.
_renewed_after: ctypes.c_double | None = None
# In a pool process: the lease of the task whose processor call runs, or None.
_current: LeaseWindow | None = None
_watching = False


@dataclass(slots=True)
class LeaseWindow:
    """When a task's lease began, as seen from the pool process that runs it.

    ``since`` is no later than the lease began: taken before the statement that
    started it was sent. ``confirmed`` is no earlier than that statement committed:
    taken when its answer came back, or None while it has not. Only a renewal that
    asked after ``confirmed`` can have found this lease, so only such a renewal counts.
    """

    uuid: str
    since: float
    confirmed: float | None = None

    @classmethod
    def confirmed_now(cls, uuid: str, since: float | None = None) -> LeaseWindow:
        now = time.monotonic()
        return cls(uuid, now if since is None else since, now)

    def confirm(self) -> None:
        self.confirmed = time.monotonic()

    def known_live(self) -> float:
        """The latest moment from which the lease is known to last a whole lease."""
        renewal = _renewed_after.value if _renewed_after is not None else 0.0
        if self.confirmed is not None and renewal >= self.confirmed:
            return max(self.since, renewal)
        return self.since


def prepare() -> None:
    """Make the shared renewal time; in the main process, before the pool forks."""
    global _renewed_after
    if _renewed_after is None:
        _renewed_after = multiprocessing.get_context("fork").RawValue(ctypes.c_double)


def renewed(after: float) -> None:
    """The keeper renewed every lease it found when it asked at ``after``."""
    if _renewed_after is not None:
        _renewed_after.value = after


def running(window: LeaseWindow) -> None:
    """This pool process calls the processor for ``window``'s task."""
    global _current
    _current = window


def idle() -> None:
    global _current
    _current = None


def watch(lease_seconds: float) -> None:
    """Start this pool process's watchdog thread (once per process)."""
    global _watching
    if _watching or _renewed_after is None:
        return
    _watching = True
    threading.Thread(
        target=_watch, args=(lease_seconds,), name="lease-watchdog", daemon=True
    ).start()


def overdue(now: float, lease_seconds: float) -> tuple[str, float] | None:
    """The running task and how long since its lease was known live, if too long."""
    window = _current
    if window is None or _renewed_after is None:
        return None
    late = now - window.known_live()
    if late < lease_seconds - MARGIN_SECONDS:
        return None
    return window.uuid, late


def _watch(lease_seconds: float) -> None:
    wait = threading.Event().wait
    while True:
        wait(POLL_SECONDS)
        found = overdue(time.monotonic(), lease_seconds)
        if found is None:
            continue
        uuid, late = found
        log.error(
            "task %s: its lease was last known renewed %.1f s ago and may lapse in "
            "%.2f s (the worker's main process is frozen or cannot reach the "
            "database): pool process %d stops its call now, so that it never runs "
            "beside the retry",
            uuid,
            late,
            lease_seconds - late,
            os.getpid(),
            extra={"task_uuid": uuid, "event": "self_fenced"},
        )
        os.kill(os.getpid(), signal.SIGKILL)
