"""Figures only our platform has: recovery after kill -9, memory over many tasks and for
one large request, the statements each task costs, and the admission rates.

Each scenario starts workers of its own on fresh services (see ``run_system``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench import workloads
from bench.services import Services
from bench.sizes import Sizes
from bench.systems.ours import (
    ECHO_PROCESSOR,
    count_failed,
    count_finished,
    our_cluster,
    setup_django,
)
from tests.harness import ROOT, Cluster, Worker, wait_until

MiB = 1024 * 1024


# --- recovery ---------------------------------------------------------------------------


def _task_row(uuid: str) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, attempts, worker, extract(epoch FROM started_at)::float8 "
            "FROM scheduler_task WHERE uuid = %s",
            [uuid],
        )
        status, attempts, worker, started = cursor.fetchone()
    return {
        "status": status,
        "attempts": attempts,
        "worker": worker,
        "started": started,
    }


def _busy(scheduler: Any, seconds: float, tag: str) -> tuple[str, dict[str, Any]]:
    uuid = str(scheduler.add_task(workloads.request(seconds, tag, 0)))
    wait_until(
        lambda: _task_row(uuid)["status"] == "processing", 60, 0.05, "processing"
    )
    return uuid, _task_row(uuid)


def _until_restarted(uuid: str, attempt: int, timeout: float) -> float:
    """The database time the task's next attempt started."""
    wait_until(
        lambda: (
            _task_row(uuid)["attempts"] > attempt
            and _task_row(uuid)["status"] == "processing"
        ),
        timeout,
        0.05,
        "the task to run again",
    )
    return float(_task_row(uuid)["started"])


def recovery(env: Services, tmp: Path, cap: int, sizes: Sizes) -> dict[str, Any]:
    """kill -9 of a whole busy worker (main process and pool) until its task runs again;
    and, for comparison, of the pool child alone, which its own main process notices."""
    cluster = our_cluster(env, tmp, cap)
    cluster.configure(scheduler_lease_seconds=sizes.recovery_lease_seconds)
    setup_django(cluster)
    from tasks_app.config import scheduler_config
    from tasks_app.scheduler import get_scheduler

    scheduler = get_scheduler()
    lease_seconds = scheduler_config().lease_seconds
    workers = {
        name: cluster.start_worker(concurrency=cap // 2, name=name)
        for name in ("a", "b")
    }
    trials: list[float] = []
    try:
        for trial in range(sizes.recovery_trials):
            uuid, row = _busy(scheduler, 600, workloads.new_tag("kill"))
            name = row["worker"].split("@", 1)[0]
            victim = workers.pop(name)
            killed_at = time.time()
            victim.kill()
            trials.append(_until_restarted(uuid, row["attempts"], 60) - killed_at)
            # Back to two live workers for the next trial, under a name of its own,
            # which is the name the next trial may find in the task's row.
            fresh = f"{name}{trial}"
            workers[fresh] = cluster.start_worker(concurrency=cap // 2, name=fresh)
            _sweep(uuid)

        uuid, row = _busy(scheduler, 600, workloads.new_tag("child"))
        child_pid = int(row["worker"].rsplit(" pid ", 1)[1])
        killed_at = time.time()
        os.kill(child_pid, signal.SIGKILL)
        child_seconds = _until_restarted(uuid, row["attempts"], 60) - killed_at
    finally:
        # The 600 s tasks are still running: a warm shutdown would wait for them.
        cluster.kill()
        cluster.stop()
    return {
        "lease_seconds": lease_seconds,
        "worker_kill_seconds": [round(t, 3) for t in trials],
        "worker_kill_max_seconds": round(max(trials), 3),
        "child_kill_seconds": round(child_seconds, 3),
    }


def _sweep(uuid: str) -> None:
    """Let a long benchmark task end now, so it holds no slot in the next trial."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE scheduler_task SET status = 'error', lease_owner = '', "
            "finished_at = now(), error = 'ended by the benchmark' WHERE uuid = %s",
            [uuid],
        )


# --- memory over many tasks ---------------------------------------------------------


def _tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), _tree_rss(self.pid)))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peak_since(self, since: float) -> int:
        return max((rss for at, rss in self.samples if at >= since), default=0)


def _submit_all(scheduler: Any, tag: str, start: int, count: int) -> list[str]:
    with ThreadPoolExecutor(workloads.CLIENTS) as pool:
        return list(
            pool.map(
                lambda i: str(scheduler.add_task(workloads.request(0, tag, i))),
                range(start, start + count),
            )
        )


def _rss_by_process(pid: int) -> dict[str, float]:
    """RSS in MiB of the main process and of each child, children by pid order."""
    root = psutil.Process(pid)
    sizes = {"main": root.memory_info().rss / MiB}
    for index, child in enumerate(sorted(root.children(), key=lambda p: p.pid)):
        sizes[f"child {index + 1} (pid {child.pid})"] = child.memory_info().rss / MiB
    return {name: round(size, 2) for name, size in sizes.items()}


def memory(env: Services, tmp: Path, cap: int, sizes: Sizes) -> dict[str, Any]:
    """Worker RSS (main process and children) over many no-op tasks: it must stay flat."""
    total = sizes.memory_tasks
    warm = total // 10
    cluster = our_cluster(env, tmp, cap, processor=ECHO_PROCESSOR)
    setup_django(cluster)
    from tasks_app.scheduler import get_scheduler

    scheduler = get_scheduler()
    worker = cluster.start_worker(concurrency=cap, name="mem")
    tag = workloads.new_tag("mem")
    try:
        sampler = RssSampler(worker.pid)
        sampler.start()
        warm_handles = _submit_all(scheduler, tag, 0, warm)
        _wait_count(warm_handles, 300)
        time.sleep(1)
        after_warm_up_at = time.monotonic()
        after_warm_up = _tree_rss(worker.pid)
        by_process_warm = _rss_by_process(worker.pid)

        handles = _submit_all(scheduler, tag, warm, total - warm)
        _wait_count(handles, 900)
        time.sleep(1)
        at_end = _tree_rss(worker.pid)
        by_process_end = _rss_by_process(worker.pid)
        sampler.stop()
        peak = sampler.peak_since(after_warm_up_at)
        children = len(psutil.Process(worker.pid).children(recursive=True))
        failed = count_failed(warm_handles + handles)
    finally:
        cluster.stop()
    return {
        "tasks": total,
        "failed": failed,
        "warm_up_tasks": warm,
        "processes": 1 + children,
        "rss_after_warm_up_mib": round(after_warm_up / MiB, 2),
        "rss_end_mib": round(at_end / MiB, 2),
        "rss_peak_after_warm_up_mib": round(peak / MiB, 2),
        "growth_pct": round((at_end - after_warm_up) * 100 / after_warm_up, 2),
        "peak_growth_pct": round((peak - after_warm_up) * 100 / after_warm_up, 2),
        "rss_by_process_after_warm_up_mib": by_process_warm,
        "rss_by_process_end_mib": by_process_end,
    }


def _wait_count(handles: list[str], timeout: float) -> None:
    wait_until(
        lambda: count_finished(handles) == len(handles), timeout, 0.5, "tasks done"
    )


# --- one large request ----------------------------------------------------------------


def _peak_rss(pid: int) -> int:
    """The kernel's high-water mark of a process's resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _helper(cluster: Cluster, *args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.big_request", *args],
        cwd=ROOT,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.big_request {args[0]} failed:\n{completed.stderr}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def big_request(
    env: Services, tmp: Path, cap: int, sizes: Sizes, server_side_binding: bool = False
) -> dict[str, Any]:
    """One large request (64 MiB in the full run) end to end: submitted by one process,
    echoed by a worker, its result read back by another; the peak RSS of each of our
    processes against 4x the request."""
    size = sizes.big_request_bytes
    cluster = our_cluster(env, tmp, cap, processor=ECHO_PROCESSOR)
    if server_side_binding:
        cluster.configure(bench_server_side_binding=1)
    setup_django(cluster)
    worker = cluster.start_worker(concurrency=cap, name="big")
    try:
        baseline = _worker_peaks(worker)
        started = time.time()
        submitted = _helper(cluster, "submit", str(size))
        uuid = submitted["uuid"]
        wait_until(lambda: count_finished([uuid]) == 1, 300, 0.1, "the large task")
        row = _task_row(uuid)
        finished = time.time()
        reader = "read-binary" if server_side_binding else "read"
        read = _helper(cluster, reader, uuid, submitted["sha256"])
        peaks = _worker_peaks(worker)
    finally:
        cluster.stop()
    limit = 4 * size
    processes = {
        "submitter": submitted["peak_rss"],
        "reader": read["peak_rss"],
        **{f"worker {name}": rss for name, rss in peaks.items()},
    }
    return {
        "request_mib": size // MiB,
        "status": row["status"],
        "result_matches": read["matches"],
        "submit_seconds": submitted["seconds"],
        "end_to_end_seconds": round(finished - started, 2),
        "limit_mib": limit // MiB,
        "peak_rss_mib": {name: round(rss / MiB, 1) for name, rss in processes.items()},
        "idle_rss_mib": {
            "submitter": round(submitted["rss_before"] / MiB, 1),
            **{f"worker {name}": round(rss / MiB, 1) for name, rss in baseline.items()},
        },
        "max_peak_mib": round(max(processes.values()) / MiB, 1),
        "max_peak_over_request": round(max(processes.values()) / size, 2),
    }


def _worker_peaks(worker: Worker) -> dict[str, int]:
    peaks = {"main": _peak_rss(worker.pid)}
    for index, pid in enumerate(sorted(worker.children())):
        peaks[f"child {index + 1}"] = _peak_rss(pid)
    return peaks


# --- what each task costs in SQL --------------------------------------------------------


def statements(env: Services, tmp: Path, cap: int, sizes: Sizes) -> dict[str, Any]:
    """SQL statements and bytes of SQL text for one admission and one task's run,
    counted in this process on the real database (no worker, so nothing races)."""
    cluster = our_cluster(env, tmp, cap)
    setup_django(cluster)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks_app import leases, runner
    from tasks_app.processors import EchoProcessor
    from tasks_app.scheduler import get_scheduler

    scheduler = get_scheduler()
    # The wake-ups go to the bench's Redis, where no worker takes them: the first
    # admissions build this process's publisher, so that the measured one is made as
    # on a quiet service, its wake-up sent before its commit.
    _log_hand_written_statements()
    tag = workloads.new_tag("sql")
    figures: dict[str, Any] = {}

    def capture(label: str, action: Callable[[], object]) -> None:
        with CaptureQueriesContext(connection) as queries:
            action()
        figures[label] = {
            "statements": len(queries.captured_queries),
            "sql_bytes": sum(len(q["sql"]) for q in queries.captured_queries),
            "sql": [q["sql"][:160] for q in queries.captured_queries],
        }

    for i in range(3):
        scheduler.add_task(workloads.request(0, tag, 100 + i))
    capture("add_task_new", lambda: scheduler.add_task(workloads.request(0, tag, 0)))
    capture(
        "add_task_duplicate", lambda: scheduler.add_task(workloads.request(0, tag, 0))
    )
    processor = EchoProcessor()
    held: dict[str, Any] = {}

    def claim() -> None:
        held["claim"] = leases.claim(
            None, worker="bench", num_workers=cap, lease_seconds=15
        )

    def finish_and_take_next() -> None:
        outcome = runner.execute(processor, held["claim"])
        held["claim"] = leases.finish(
            held["claim"], outcome, take_next=True, worker="bench", lease_seconds=15
        )

    capture("claim", claim)
    capture("finish_and_take_next", finish_and_take_next)
    while held["claim"] is not None and scheduler.state().queued:
        finish_and_take_next()
    # The last task of a queue: the slot is let go under the slot lock.
    capture("finish_with_queue_empty", finish_and_take_next)
    figures["large_insert_sql_bytes_per_request_byte"] = _client_side_inflation()
    return figures


def _log_hand_written_statements() -> None:
    """Let Django's query log see the statements run through ``tasks_app.sql``.

    ``sql.fetch`` runs each on a psycopg cursor of its own, past Django's cursor wrapper,
    so ``CaptureQueriesContext`` would count none of them; logged here, they are counted
    in order with Django's own (and its BEGIN and COMMIT).
    """
    from django.db import connections

    from tasks_app import sql

    fetch = sql.fetch

    def logged(
        using: str, query: str, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        rows = fetch(using, query, params)
        connection = connections[using]
        if connection.queries_logged:
            connection.queries_log.append({"sql": query, "time": "0.000"})
        return rows

    sql.fetch = logged
    before_commit = sql.fetch_before_commit

    @contextmanager
    def logged_before_commit(
        using: str, query: str, params: tuple[Any, ...]
    ) -> Iterator[list[tuple[Any, ...]]]:
        connection = connections[using]
        with before_commit(using, query, params) as rows:
            if connection.queries_logged:  # one round trip: BEGIN and the statement
                connection.queries_log.append({"sql": "BEGIN; " + query, "time": "0"})
            yield rows
        if connection.queries_logged:
            connection.queries_log.append({"sql": "COMMIT", "time": "0"})

    sql.fetch_before_commit = logged_before_commit  # type: ignore[assignment]


def _client_side_inflation() -> float:
    """How many bytes of SQL text one byte of request becomes with client-side binding."""
    from django.db import connection

    payload = os.urandom(MiB)
    with connection.cursor() as cursor:
        sql = cursor.mogrify("SELECT %s", [payload])
    return round(len(sql) / len(payload), 3)


# --- admission rates (another engineer's module) -------------------------------------


def admission(env: Services, tmp: Path, cap: int, sizes: Sizes) -> dict[str, Any]:
    """HTTP and gRPC admissions per second, new and duplicate (bench.grpc_http_rates)."""
    cluster = our_cluster(env, tmp, cap)
    setup_django(cluster)
    os.environ["BENCH_LOG_DIR"] = str(tmp)
    from bench import grpc_http_rates  # type: ignore[attr-defined]

    return dict(grpc_http_rates.run(sizes.admission_seconds_per_phase))


def _profile(env: Services, tmp: Path, cap: int, sizes: Sizes) -> dict[str, Any]:
    from bench import profile

    return profile.profile(env, tmp, cap, sizes)


SCENARIOS: dict[str, Callable[[Services, Path, int, Sizes], dict[str, Any]]] = {
    "ours_profile": _profile,
    "ours_recovery": recovery,
    "ours_memory": memory,
    "ours_big_request": big_request,
    # A measured proposal, not as shipped: psycopg's server-side binding for the writes,
    # and the result read back with a binary-format cursor.
    "ours_big_request_ssb": lambda env, tmp, cap, sizes: big_request(
        env, tmp, cap, sizes, server_side_binding=True
    ),
    "ours_statements": statements,
    "ours_admission": admission,
}
