"""The workloads every system runs, and the figures computed from their timestamps.

A system is anything with ``submit`` and ``finished``: the workload records the wall
clock just before each submit call, and the system answers, for each handle, the
completion time its own store recorded (our ``finished_at``, a result backend's
``date_done``, Procrastinate's ``succeeded`` event, the time a Dramatiq actor wrote).
Every clock is this machine's, so the differences are latencies. Each figure also
counts the tasks that failed, after its clock has stopped: a figure over failed tasks
measures nothing (``bench.checks`` refuses it).
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from bench.sizes import Sizes

REQUEST_BYTES = 1024
POLL_SECONDS = 0.2
ROUND_TRIP_RATE = 50  # submissions per second
# BENCH_CLIENTS: the client threads that submit the utilization and burst batches, so
# that a system's submit call does not pace work that was all handed over at once.
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))

_run_ids = itertools.count()


class System(Protocol):
    name: str
    cap: int

    def submit(self, seconds: float, payload: bytes) -> str:
        """Submit a task that sleeps ``seconds`` and returns ``payload``; its handle."""
        ...

    def finished(self, handles: list[str]) -> dict[str, float]:
        """The completion time (epoch seconds) of each handle that has finished."""
        ...

    def count_finished(self, handles: list[str]) -> int: ...

    def count_failed(self, handles: list[str]) -> int:
        """How many of the finished handles ended in failure rather than success."""
        ...


def request(seconds: float, tag: str, index: int, size: int = REQUEST_BYTES) -> bytes:
    """A request of ``size`` bytes, unique per tag and index, that says how long to sleep.

    Unique, because our scheduler answers a repeated request with the existing task.
    """
    head = f"{seconds:.6f}|{tag}-{index}|".encode()
    return head + b"x" * max(0, size - len(head))


def new_tag(label: str) -> str:
    return f"{label}{next(_run_ids)}-{time.time_ns()}"


def submit_all(
    system: System, seconds: float, tag: str, count: int, clients: int = CLIENTS
) -> list[str]:
    """Submit ``count`` tasks from ``clients`` threads at once; their handles in order."""
    if clients <= 1:
        return [system.submit(seconds, request(seconds, tag, i)) for i in range(count)]
    with ThreadPoolExecutor(clients, thread_name_prefix="client") as pool:
        return list(
            pool.map(
                lambda i: system.submit(seconds, request(seconds, tag, i)), range(count)
            )
        )


def wait_finished(
    system: System, handles: list[str], timeout: float
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while system.count_finished(handles) < len(handles):
        if time.monotonic() > deadline:
            done = system.count_finished(handles)
            raise TimeoutError(
                f"{system.name}: {done} of {len(handles)} tasks finished in {timeout:g} s"
            )
        time.sleep(POLL_SECONDS)
    return system.finished(handles)


def warm_up(system: System, count: int) -> None:
    """Run a few tasks first, so that connections and imports are in place."""
    tag = new_tag("warm")
    handles = [system.submit(0, request(0, tag, i)) for i in range(count)]
    wait_finished(system, handles, timeout=120)


def utilization(system: System, count: int, seconds: float) -> dict[str, float]:
    """Busy slot time over available slot time, from the first submit to the last done."""
    tag = new_tag("util")
    first = time.time()
    handles = submit_all(system, seconds, tag, count)
    submitted = time.time()
    done = wait_finished(system, handles, timeout=count * seconds * 4 + 120)
    wall = max(done.values()) - first
    return {
        "tasks": count,
        "failed": system.count_failed(handles),
        "task_seconds": seconds,
        "wall_seconds": round(wall, 4),
        "submit_seconds": round(submitted - first, 4),
        "utilization": round(count * seconds / (system.cap * wall), 4),
    }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_summary(latencies_seconds: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in latencies_seconds]
    return {
        "samples": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


@dataclass
class PacedRun:
    """The raw times of one paced run: each latency from its submit call to done."""

    latencies: list[float]
    submit_calls: list[float]
    late_submits: int
    failed: int
    # The lead-in's latencies, paced like the rest but not in ``latencies``.
    lead_in: list[float] = field(default_factory=list)


def paced(
    system: System,
    rate_per_second: float,
    seconds: float,
    submit=None,
    lead_in_seconds: float = 0.0,
) -> PacedRun:
    """Paced no-op submissions, one every ``1 / rate_per_second`` seconds.

    ``submit`` replaces ``system.submit`` (our HTTP path submits differently). The
    stream starts with ``lead_in_seconds`` of the same pace whose latencies are kept
    apart, so that ``latencies`` are those of a stream already under way.
    """
    submit = submit or system.submit
    tag = new_tag("rt")
    lead_in = int(rate_per_second * lead_in_seconds)
    count = lead_in + int(rate_per_second * seconds)
    interval = 1.0 / rate_per_second
    started: dict[str, float] = {}
    submit_calls: list[float] = []
    late = 0
    begin = time.monotonic()
    for index in range(count):
        pause = begin + index * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif index:  # the first one's time is now, so it is never late
            late += 1
        at = time.time()
        handle = submit(0, request(0, tag, index))
        submit_calls.append(time.time() - at)
        started[handle] = at
    done = wait_finished(system, list(started), timeout=120)
    latencies = [done[h] - started[h] for h in started]
    return PacedRun(
        latencies[lead_in:],
        submit_calls[lead_in:],
        late,
        system.count_failed(list(started)),
        latencies[:lead_in],
    )


def round_trip(
    system: System, rate_per_second: float, seconds: float, submit=None
) -> dict[str, float]:
    """Paced no-op submissions; each latency is from the submit call to completion."""
    run = paced(system, rate_per_second, seconds, submit)
    summary = latency_summary(run.latencies)
    summary["failed"] = run.failed
    summary["rate_per_second"] = rate_per_second
    summary["late_submits"] = run.late_submits
    # How much of the round trip the submit call itself is (the client's share).
    calls = latency_summary(run.submit_calls)
    summary["submit_call_p50_ms"] = calls["p50_ms"]
    summary["submit_call_p99_ms"] = calls["p99_ms"]
    return summary


def burst(system: System, count: int, clients: int = CLIENTS) -> dict[str, float]:
    """``count`` no-op tasks submitted at once; tasks per second to the last done."""
    tag = new_tag("burst")
    first = time.time()
    handles = submit_all(system, 0, tag, count, clients)
    submitted = time.time()
    done = wait_finished(system, handles, timeout=count * 0.5 + 120)
    wall = max(done.values()) - first
    return {
        "tasks": count,
        "failed": system.count_failed(handles),
        "clients": clients,
        "wall_seconds": round(wall, 4),
        "submit_seconds": round(submitted - first, 4),
        "submit_per_second": round(count / (submitted - first), 1),
        "tasks_per_second": round(count / wall, 1),
    }


def standard_figures(system: System, sizes: Sizes) -> dict[str, dict[str, float]]:
    """The figures every system reports: utilization, round trip, burst."""
    warm_up(system, sizes.warm_up_tasks)
    return {
        "util_50ms": utilization(system, sizes.util_50ms_tasks, 0.05),
        "util_1s": utilization(system, sizes.util_1s_tasks, 1.0),
        "round_trip": round_trip(system, ROUND_TRIP_RATE, sizes.round_trip_seconds),
        "burst": burst(system, sizes.burst_tasks),
        "burst_one_client": burst(system, sizes.burst_one_client_tasks, clients=1),
    }
