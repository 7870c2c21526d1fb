"""What each benchmark must have produced, whatever its times: every task it submitted
done, none failed, every figure present with its counts.

A benchmark that breaks usually still answers something (a skipped HTTP round trip, an
admission phase of errors, a large request that came back wrong); these checks turn
that into a failed benchmark, so that ``make bench`` exits non-zero. No time or rate is
compared with a bound: that is what the targets are for, and they are not asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import workloads
from bench.sizes import Sizes

ADMISSION_PHASES = ("add_task_new", "add_task_duplicate", "get_task")
SQL_STEPS = (
    "add_task_new",
    "add_task_duplicate",
    "claim",
    "finish_and_take_next",
    "finish_with_queue_empty",
)


def problems(name: str, figures: Any, sizes: Sizes, standard: bool) -> list[str]:
    """What is missing or wrong in one benchmark's figures; empty when complete.

    ``standard``: the benchmark is a system's standard figures (``bench.workloads``),
    not one of our scenarios.
    """
    if not isinstance(figures, dict) or not figures:
        return ["it produced no figures"]
    if standard:
        found = _standard(figures, sizes)
        if name == "ours":
            found += _ours_extra(figures, sizes)
        return found
    check = SCENARIO_CHECKS.get(name)
    if check is None:
        return [f"no check is defined for {name!r} (add one to bench/checks.py)"]
    return check(figures, sizes)


def _tasks(label: str, figure: Any, count_key: str, expected: int) -> list[str]:
    """A figure over ``expected`` tasks, all of them done and none failed."""
    if not isinstance(figure, dict):
        return [f"{label}: missing"]
    if "error" in figure or "skipped" in figure:
        return [f"{label}: {figure.get('error') or figure.get('skipped')}"]
    found = []
    if figure.get(count_key) != expected:
        found.append(f"{label}: {figure.get(count_key)} tasks, expected {expected}")
    if figure.get("failed") != 0:
        found.append(f"{label}: {figure.get('failed')} tasks failed")
    return found


def _round_trip_tasks(sizes: Sizes) -> int:
    return int(workloads.ROUND_TRIP_RATE * sizes.round_trip_seconds)


def _standard(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    expected = {
        "util_50ms": ("tasks", sizes.util_50ms_tasks),
        "util_1s": ("tasks", sizes.util_1s_tasks),
        "round_trip": ("samples", _round_trip_tasks(sizes)),
        "burst": ("tasks", sizes.burst_tasks),
        "burst_one_client": ("tasks", sizes.burst_one_client_tasks),
    }
    found: list[str] = []
    for label, (count_key, count) in expected.items():
        found += _tasks(label, figures.get(label), count_key, count)
    return found


def _ours_extra(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = _tasks(
        "round_trip_http",
        figures.get("round_trip_http"),
        "samples",
        _round_trip_tasks(sizes),
    )
    if "extra_error" in figures:
        found.append(f"extra figures: {figures['extra_error']}")
    return found


def _recovery(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = []
    trials = figures.get("worker_kill_seconds") or []
    if len(trials) != sizes.recovery_trials:
        found.append(
            f"{len(trials)} worker kill trials recovered, "
            f"expected {sizes.recovery_trials}"
        )
    if figures.get("child_kill_seconds") is None:
        found.append("the pool child's kill was not recovered")
    if figures.get("lease_seconds") != sizes.recovery_lease_seconds:
        found.append(
            f"the lease was {figures.get('lease_seconds')} s, "
            f"expected {sizes.recovery_lease_seconds:g} s"
        )
    return found


def _memory(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = _tasks("memory", figures, "tasks", sizes.memory_tasks)
    for key in ("rss_after_warm_up_mib", "rss_end_mib"):
        if not figures.get(key):
            found.append(f"memory: no {key}")
    return found


def _big_request(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = []
    if figures.get("status") != "done":
        found.append(f"the large task ended {figures.get('status')!r}, not 'done'")
    if figures.get("result_matches") is not True:
        found.append("the large task's result differs from its request")
    if figures.get("request_mib") != sizes.big_request_bytes // (1024 * 1024):
        found.append(f"the request was {figures.get('request_mib')} MiB")
    peaks = figures.get("peak_rss_mib") or {}
    if not peaks or not all(peaks.values()):
        found.append(f"a process's peak RSS is missing: {peaks}")
    return found


def _statements(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = [
        f"SQL statements: no {step}"
        for step in SQL_STEPS
        if not (figures.get(step) or {}).get("statements")
    ]
    if not figures.get("large_insert_sql_bytes_per_request_byte"):
        found.append("SQL statements: no bytea inflation")
    return found


def _admission(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = []
    for protocol in ("grpc", "http"):
        rates = figures.get(protocol)
        if not isinstance(rates, dict):
            found.append(f"admission: no {protocol} figures")
            continue
        for phase in ADMISSION_PHASES:
            if not rates.get(f"{phase}_per_second"):
                found.append(f"admission: no {protocol} {phase} call succeeded")
            if rates.get(f"{phase}_errors"):
                found.append(
                    f"admission: {rates[f'{phase}_errors']} {protocol} {phase} "
                    "calls failed"
                )
    return found


def _profile(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    found = []
    if figures.get("tasks") != sizes.profile_tasks:
        found.append(f"profile: {figures.get('tasks')} tasks")
    for side in ("client", "worker"):
        if not (figures.get(side) or {}).get("samples"):
            found.append(f"profile: no samples of the {side}")
    return found


def _interleaved(figures: dict[str, Any], sizes: Sizes) -> list[str]:
    """Every system's rounds, each of all its paced tasks, none failed."""
    from bench.run_system import SYSTEMS

    per_round = int(workloads.ROUND_TRIP_RATE * sizes.interleaved_round_seconds)
    found: list[str] = []
    for name in SYSTEMS:
        found += _tasks(
            f"interleaved {name}",
            figures.get(name),
            "samples",
            per_round * sizes.interleaved_rounds,
        )
        if "first_after_idle_p50_ms" not in (figures.get(name) or {}):
            found.append(f"interleaved {name}: no first task after idle")
    return found


SCENARIO_CHECKS: dict[str, Callable[[dict[str, Any], Sizes], list[str]]] = {
    "interleaved_round_trip": _interleaved,
    "ours_recovery": _recovery,
    "ours_memory": _memory,
    "ours_big_request": _big_request,
    "ours_big_request_ssb": _big_request,
    "ours_statements": _statements,
    "ours_admission": _admission,
    "ours_profile": _profile,
}
