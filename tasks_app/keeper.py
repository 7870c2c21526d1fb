"""The lease keeper: a thread in each worker's main process that keeps its promises.

It runs outside the pool children that call the processor, so a processor that blocks,
or holds the GIL in native code, keeps its lease for as long as its worker lives. Every
tick it:

1. ends the leases of children that died (the OOM killer, a segfault), so their tasks
   come back at once instead of at expiry;
2. stops children whose task is past SCHEDULER_TASK_TIME_LIMIT, and marks it ``error``;
3. renews the leases of live children;
4. puts back tasks whose lease expired anywhere in the cluster (``recover_expired``),
   and publishes again queued tasks whose message seems lost (``redispatch_stale``);
5. deletes finished tasks past SCHEDULER_RETENTION_DAYS, now and then;
6. logs an error, at most once a minute, while more tasks are processing in the
   cluster than this worker's SCHEDULER_NUM_WORKERS allows;
7. touches the heartbeat file that the worker's liveness probe reads.

Each step is safe on every replica at once, so no separate periodic scheduler exists.
One statement (``leases.survey``) tells a tick which of them have work, so a quiet
tick costs that statement and little Python: whatever Python it runs keeps the main
thread, which hands every task to the pool, waiting for the GIL.
If leases go unrenewed for almost a lease (the database is unreachable), a second thread
kills the children that hold them: their tasks are about to run elsewhere, and the cap
must hold. A main process frozen whole can do neither; each child then stops its own
call a little later (``pool_watchdog``), from the renewal times this keeper shares.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import psutil
from django.db import close_old_connections, connections

from . import leases, pool_watchdog, retention
from .config import SchedulerConfig, scheduler_config

log = logging.getLogger(__name__)

RETENTION_INTERVAL_SECONDS = 600.0
FENCE_POLL_SECONDS = 0.25
OVER_CAP_LOG_INTERVAL_SECONDS = 60.0


def live_pids(among: set[int] | None = None) -> set[int]:
    """This process and its live (not zombie) children; only those ``among`` if given.

    Listing every child scans all of /proc (2 ms of Python on a busy host); a tick
    asks only about the pids that hold leases, most often none.
    """
    me = os.getpid()
    if among is None:
        children = psutil.Process(me).children(recursive=False)
    else:
        children = []
        for pid in among - {me}:
            # A pid we may not look at (a hardened /proc) is someone else's.
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                child = psutil.Process(pid)
                if child.ppid() == me:  # not a reused pid of someone else's
                    children.append(child)
    pids = {me} if among is None or me in among else set()
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


class LeaseKeeper(threading.Thread):
    def __init__(
        self, config: SchedulerConfig | None = None, heartbeat: Path | None = None
    ):
        super().__init__(name="lease-keeper", daemon=True)
        self.config = config or scheduler_config()
        self.heartbeat = heartbeat
        self.boot = leases.boot_id()
        # Not ``_stop``: that is a method of Thread that ``join()`` calls.
        self._stopping = threading.Event()
        # When the last successful renewal began: every lease this keeper renews runs
        # until at least that moment plus the lease, on the database clock.
        self._last_renewal = 0.0
        # When a tick last succeeded, and whether the pool was fenced since then.
        self._last_good_tick = time.monotonic()
        self._blind_fenced = False
        self._last_retention = 0.0
        self._last_over_cap_log = -OVER_CAP_LOG_INTERVAL_SECONDS
        self._owners: set[str] = set()
        self._fence_lock = threading.Lock()
        self._watcher = threading.Thread(
            target=self._watch, name="lease-fence", daemon=True
        )

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        log.info(
            "lease keeper started (boot %s, lease %g s, tick %g s)",
            self.boot,
            self.config.lease_seconds,
            self.config.reconcile_interval_seconds,
        )
        self._watcher.start()
        while not self._stopping.wait(self.config.reconcile_interval_seconds):
            try:
                close_old_connections()
                self.tick()
                self._last_good_tick = time.monotonic()
                self._blind_fenced = False
            except Exception:
                log.exception("lease keeper tick failed; trying again next tick")
                connections.close_all()
        connections.close_all()

    def tick(self) -> None:
        config = self.config
        self._fence()
        # Before the question: a lease that began after it is not renewed below, and
        # its pool process counts from its own start instead (pool_watchdog).
        asked = time.monotonic()
        stale_seconds = max(2.0, config.lease_seconds / 3)
        survey = leases.survey(
            self.boot,
            config.task_time_limit_seconds,
            config.num_workers,
            stale_seconds,
        )
        alive = live_pids(among={lease.pid for lease in survey.held})
        renewable: list[str] = []
        ended_here = False
        for lease in survey.held:
            if lease.pid not in alive:
                leases.expire(lease.uuid, lease.owner)
                ended_here = True
                log.warning(
                    "task %s: the process %d running it is gone; its lease ends now",
                    lease.uuid,
                    lease.pid,
                    extra={"task_uuid": lease.uuid, "event": "worker_lost"},
                )
            elif lease.over_time_limit:
                self._stop_over_time(lease)
            else:
                renewable.append(lease.owner)

        now = time.monotonic()
        # A quarter of the lease: the fence below acts at the lease less a tick, so the
        # longest gap between renewals (a quarter plus a tick) stays well inside it.
        if renewable and now - self._last_renewal >= config.lease_seconds / 4:
            leases.renew(sorted(set(renewable)), config.lease_seconds)
            self._last_renewal = now
            pool_watchdog.renewed(asked)
        self._owners = set(renewable)

        # Most ticks find nothing to recover or publish again, and skip both.
        if survey.expired or ended_here:
            leases.recover_expired(config.max_attempts)
        # A lease ended here may free a slot or a reservation the survey did not see.
        if survey.stale or ended_here:
            leases.redispatch_stale(config.num_workers, stale_seconds=stale_seconds)

        if survey.processing > config.num_workers:
            self._log_over_cap(survey.processing, now)

        if (
            config.retention_days
            and now - self._last_retention > RETENTION_INTERVAL_SECONDS
        ):
            self._last_retention = now
            retention.delete_finished(config.retention_days)

        if self.heartbeat is not None:
            self.heartbeat.touch()

    def _log_over_cap(self, processing: int, now: float) -> None:
        # Each claim counts against the cap of the process that makes it, so processes
        # that disagree on it let the largest win. Only one with a smaller cap than
        # another's can see that happen; it cannot stop calls running elsewhere.
        if now - self._last_over_cap_log < OVER_CAP_LOG_INTERVAL_SECONDS:
            return
        self._last_over_cap_log = now
        log.error(
            "%d tasks are processing in the cluster, over this worker's "
            "SCHEDULER_NUM_WORKERS=%d: another worker runs with a larger value, or the "
            "cap was just lowered and these are finishing. Give every worker and web "
            "replica the same SCHEDULER_NUM_WORKERS",
            processing,
            self.config.num_workers,
            extra={"event": "over_cap"},
        )

    def _stop_over_time(self, lease: leases.HeldLease) -> None:
        limit = self.config.task_time_limit_seconds
        if lease.pid != os.getpid():
            # Kill first: the slot must not be free while the call still runs.
            with contextlib.suppress(ProcessLookupError):
                os.kill(lease.pid, signal.SIGKILL)
        leases.fail_running(
            lease.uuid,
            lease.owner,
            lease.attempt,
            f"the processor ran longer than SCHEDULER_TASK_TIME_LIMIT={limit:g} s and was stopped",
        )

    def _watch(self) -> None:
        """The fence, on a thread that touches no database.

        A tick stuck on an unreachable database cannot keep this thread from acting.
        """
        # Often, whatever the tick: the fence must act well before a lease lapses.
        interval = min(FENCE_POLL_SECONDS, self.config.reconcile_interval_seconds)
        while not self._stopping.wait(interval):
            self._fence()

    def _fence(self) -> None:
        """Kill the pool processes whose leases are about to lapse unrenewed.

        Once a lease lapses, the task runs elsewhere: the process still running it must
        be gone by then, or the cap would not hold. This runs first in every tick too,
        so that a worker resumed after a freeze (SIGSTOP, a paused VM) stops its stale
        processes before it learns that their tasks moved on.
        """
        deadline = (
            self.config.lease_seconds - self.config.reconcile_interval_seconds - 0.5
        )
        with self._fence_lock:
            now = time.monotonic()
            pids = {int(owner.rsplit(":", 1)[1]) for owner in self._owners}
            unrenewed = now - self._last_renewal
            blind = now - self._last_good_tick
            if pids and unrenewed >= deadline:
                reason = f"leases unrenewed for {unrenewed:.1f} s"
                self._owners = set()
            elif blind >= deadline and not self._blind_fenced:
                # A claim made after the last good tick holds a lease this keeper has
                # never seen: with no tick for that long, any pool process may.
                pids = live_pids()
                reason = f"no lease keeper tick for {blind:.1f} s"
                self._blind_fenced = True
            else:
                return
            for pid in pids - {os.getpid()}:
                log.error(
                    "%s (no database, or this worker was frozen): killing pool "
                    "process %d, whose task runs elsewhere once its lease lapses",
                    reason,
                    pid,
                    extra={"event": "fenced"},
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
