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

Both times are taken before the statement they stand for was sent, and leases are on
the database's clock, so each lease lasts at least ``lease_seconds`` past them. Linux's
monotonic clock is one clock for every process of a machine.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# Before the lease can lapse: two polls, and time for the kill to land.
MARGIN_SECONDS = 2 * POLL_SECONDS + 0.25

# The monotonic time before the keeper's last successful renewal asked which leases
# this worker holds: every lease it renewed lasts past this plus the lease time.
_renewed_after: ctypes.c_double | None = None
# In a pool process: since when (monotonic) the task it is running holds a lease, or
# None between tasks.
_running_since: float | None = None
_running_uuid = ""
_watching = False


def prepare() -> None:
    """Make the shared renewal time; in the main process, before the pool forks."""
    global _renewed_after
    if _renewed_after is None:
        _renewed_after = multiprocessing.get_context("fork").RawValue(ctypes.c_double)


def renewed(after: float) -> None:
    """The keeper renewed every lease it found when it asked at ``after``."""
    if _renewed_after is not None:
        _renewed_after.value = after


def running(uuid: str, since: float) -> None:
    """This pool process calls the processor for ``uuid``, leased since ``since``."""
    global _running_since, _running_uuid
    _running_uuid, _running_since = uuid, since


def idle() -> None:
    global _running_since
    _running_since = None


def watch(lease_seconds: float) -> None:
    """Start this pool process's watchdog thread (once per process)."""
    global _watching
    if _watching or _renewed_after is None:
        return
    _watching = True
    threading.Thread(
        target=_watch, args=(lease_seconds,), name="lease-watchdog", daemon=True
    ).start()


def overdue(now: float, lease_seconds: float) -> float | None:
    """How long since the current lease was last known live, if too long; else None."""
    since = _running_since
    if since is None or _renewed_after is None:
        return None
    known_live = max(since, _renewed_after.value)
    if now - known_live < lease_seconds - MARGIN_SECONDS:
        return None
    return now - known_live


def _watch(lease_seconds: float) -> None:
    wait = threading.Event().wait
    while True:
        wait(POLL_SECONDS)
        late = overdue(time.monotonic(), lease_seconds)
        if late is None:
            continue
        log.error(
            "task %s: its lease was last renewed %.1f s ago and may lapse in %.2f s "
            "(the worker's main process is frozen or cannot reach the database): "
            "pool process %d stops its call now, so that it never runs beside the "
            "retry",
            _running_uuid,
            late,
            lease_seconds - late,
            os.getpid(),
            extra={"task_uuid": _running_uuid, "event": "self_fenced"},
        )
        os.kill(os.getpid(), signal.SIGKILL)
