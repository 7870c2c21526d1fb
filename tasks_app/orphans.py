"""Pool children die with their worker's main process.

When only the main process of a worker is killed (the OOM killer picks the largest
process), Linux leaves its pool children running: they would go on calling the
processor while the lease keeper, which died with the main process, renews nothing, so
the task runs again elsewhere beside them and the cap no longer holds.

Linux can signal a child when its parent dies (PR_SET_PDEATHSIG), but the signal comes
when the *thread* that forked the child ends. billiard forks from the main thread with
an event-loop transport (Redis), and from a supervisor thread otherwise (the filesystem
broker), which ends before the children during a warm shutdown. So a child forked from
the main thread asks for the signal, and any other child watches its parent instead.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 0.5

_forked_from_main_thread = False


def _note_forking_thread() -> None:
    global _forked_from_main_thread
    _forked_from_main_thread = threading.current_thread() is threading.main_thread()


def prepare_parent() -> None:
    """In the worker's main process, before the pool forks."""
    os.register_at_fork(before=_note_forking_thread)


def bind_child_to_parent(parent_pid: int) -> None:
    """In a pool child: end this process as soon as ``parent_pid`` is gone."""
    if _forked_from_main_thread and _set_parent_death_signal():
        if os.getppid() != parent_pid:  # the parent died before the signal was set
            os._exit(1)
        return
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True
    ).start()


def _set_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        threading.Event().wait(PARENT_POLL_SECONDS)
    log.error("worker main process %d is gone: this pool process exits", parent_pid)
    os._exit(1)
