"""The table of figures, the ratios of ours to each baseline, and the targets."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINES = [
    "celery_redis",
    "celery_dcr_stock",
    "celery_dcr_reused",
    "procrastinate",
    "dramatiq",
]
PG_BACKED = ["celery_dcr_stock", "celery_dcr_reused", "procrastinate"]


# The benchmark that measures every system's round trip again, in turns.
INTERLEAVED = "interleaved_round_trip"


@dataclass(frozen=True)
class Row:
    label: str
    path: tuple[str, ...]
    higher_is_better: bool
    digits: int
    # None: the system's own benchmark; else a benchmark whose figures are per system.
    benchmark: str | None = None


ROWS = [
    Row("utilization, 50 ms tasks", ("util_50ms", "utilization"), True, 3),
    Row("utilization, 1 s tasks", ("util_1s", "utilization"), True, 3),
    Row("round trip p50 (ms)", ("round_trip", "p50_ms"), False, 2),
    Row("round trip p99 (ms)", ("round_trip", "p99_ms"), False, 2),
    Row(
        "  of which the submit call, p50 (ms)",
        ("round_trip", "submit_call_p50_ms"),
        False,
        2,
    ),
    Row("round trip p50, interleaved rounds (ms)", ("p50_ms",), False, 2, INTERLEAVED),
    Row("round trip p99, interleaved rounds (ms)", ("p99_ms",), False, 2, INTERLEAVED),
    Row(
        "  first task after idle, p50 (ms)",
        ("first_after_idle_p50_ms",),
        False,
        2,
        INTERLEAVED,
    ),
    Row(
        "  first task after idle, max (ms)",
        ("first_after_idle_max_ms",),
        False,
        2,
        INTERLEAVED,
    ),
    Row("burst (tasks/s)", ("burst", "tasks_per_second"), True, 0),
    Row("burst submit (tasks/s)", ("burst", "submit_per_second"), True, 0),
    Row("burst, 1 client (tasks/s)", ("burst_one_client", "tasks_per_second"), True, 0),
]


def figure(
    results: dict[str, Any],
    system: str,
    path: tuple[str, ...],
    benchmark: str | None = None,
) -> Any:
    value: Any = results.get(benchmark or system, {}).get("figures")
    if benchmark is not None:
        value = value.get(system) if isinstance(value, dict) else None
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _ratio(ours: Any, other: Any) -> str:
    if not ours or not other:
        return ""
    return f" ({ours / other:.2f}x)"


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per figure, ours first, each baseline with ours / baseline."""
    interleaved = results.get(INTERLEAVED, {}).get("figures") or {}
    systems = ["ours", *[s for s in BASELINES if s in results or s in interleaved]]
    lines = [
        "| figure | " + " | ".join(systems) + " |",
        "| --- |" + " --- |" * len(systems),
    ]
    for row in ROWS:
        ours = figure(results, "ours", row.path, row.benchmark)
        cells = [_cell(ours, row.digits)]
        for system in systems[1:]:
            other = figure(results, system, row.path, row.benchmark)
            cells.append(_cell(other, row.digits) + _ratio(ours, other))
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    http = figure(results, "ours", ("round_trip_http",))
    if isinstance(http, dict) and "p50_ms" in http:
        lines.append(
            f"| round trip over HTTP p50 / p99 (ms) | {http['p50_ms']:.2f} / "
            f"{http['p99_ms']:.2f} |" + " |" * (len(systems) - 1)
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    text: str
    check: Callable[[dict[str, Any]], tuple[bool | None, str]]


def _min_over(results: dict[str, Any], systems: list[str], path: tuple[str, ...]):
    values = [figure(results, s, path) for s in systems]
    return [v for v in values if v is not None]


def _util(
    path: str, floor: float
) -> Callable[[dict[str, Any]], tuple[bool | None, str]]:
    def check(results: dict[str, Any]) -> tuple[bool | None, str]:
        value = figure(results, "ours", (path, "utilization"))
        if value is None:
            return None, "not measured"
        return value >= floor, f"{value:.3f}"

    return check


def _burst(results: dict[str, Any]) -> tuple[bool | None, str]:
    ours = figure(results, "ours", ("burst", "tasks_per_second"))
    celery = figure(results, "celery_redis", ("burst", "tasks_per_second"))
    peers = _min_over(results, PG_BACKED, ("burst", "tasks_per_second"))
    if ours is None or celery is None or not peers:
        return None, "not measured"
    ok = ours > max(peers) and ours >= 0.7 * celery
    return (
        ok,
        f"{ours:.0f}/s vs best PG peer {max(peers):.0f}/s, {ours / celery:.2f}x Celery",
    )


def _round_trip(results: dict[str, Any], system: str, key: str) -> tuple[Any, str]:
    """A round-trip figure, from the interleaved rounds when they ran.

    Those meet every system with the same moments of the machine; the figures of one
    system after another, minutes apart, are the fallback.
    """
    interleaved = figure(results, system, (key,), INTERLEAVED)
    if interleaved is not None:
        return interleaved, "interleaved rounds"
    return figure(results, system, ("round_trip", key)), "one system after another"


def _rt_median(results: dict[str, Any]) -> tuple[bool | None, str]:
    ours, source = _round_trip(results, "ours", "p50_ms")
    celery, _ = _round_trip(results, "celery_redis", "p50_ms")
    if ours is None or celery is None:
        return None, "not measured"
    return (
        ours <= 2 * celery,
        f"{ours:.2f} ms = {ours / celery:.2f}x Celery's {celery:.2f} ({source})",
    )


def _rt_p99(results: dict[str, Any]) -> tuple[bool | None, str]:
    ours, source = _round_trip(results, "ours", "p99_ms")
    peers = [_round_trip(results, peer, "p99_ms")[0] for peer in PG_BACKED]
    peers = [value for value in peers if value is not None]
    if ours is None or not peers:
        return None, "not measured"
    return (
        ours < min(peers),
        f"{ours:.2f} ms vs best PG peer {min(peers):.2f} ms ({source})",
    )


def _http_duplicates(results: dict[str, Any]) -> tuple[bool | None, str]:
    figures = results.get("ours_admission", {}).get("figures") or {}
    new = _find_rate(figures, "http", "new")
    duplicate = _find_rate(figures, "http", "dup")
    if new is None or duplicate is None:
        return None, "not measured (bench/grpc_http_rates.py missing or no HTTP rates)"
    return duplicate >= 2 * new, f"{duplicate:.0f}/s duplicates vs {new:.0f}/s new"


RATE_WORDS = ("per_second", "per_s", "rps", "rate")


def _find_rate(figures: Any, *words: str, prefix: str = "") -> float | None:
    """A rate under a key path naming every word (the module's layout is its own)."""
    if isinstance(figures, dict):
        for key, value in figures.items():
            found = _find_rate(value, *words, prefix=f"{prefix}.{key}".lower())
            if found is not None:
                return found
        return None
    if isinstance(figures, bool) or not isinstance(figures, int | float):
        return None
    named = all(word in prefix for word in words)
    return float(figures) if named and any(w in prefix for w in RATE_WORDS) else None


def _recovery(results: dict[str, Any]) -> tuple[bool | None, str]:
    figures = results.get("ours_recovery", {}).get("figures")
    if not figures:
        return None, "not measured"
    worst, lease = figures["worker_kill_max_seconds"], figures["lease_seconds"]
    return worst <= lease + 2, f"{worst:.1f} s (lease {lease:g} s)"


def _memory(results: dict[str, Any]) -> tuple[bool | None, str]:
    figures = results.get("ours_memory", {}).get("figures")
    if not figures:
        return None, "not measured"
    growth = figures["growth_pct"]
    return growth < 5, f"{growth:+.2f}% over {figures['tasks']} tasks"


def _big(results: dict[str, Any]) -> tuple[bool | None, str]:
    figures = results.get("ours_big_request", {}).get("figures")
    if not figures:
        return None, "not measured"
    ratio = figures["max_peak_over_request"]
    return ratio < 4 and figures["result_matches"], (
        f"max peak {figures['max_peak_mib']:.0f} MiB = {ratio:.2f}x the request"
    )


TARGETS = [
    Target("utilization >= 0.95 at 50 ms", _util("util_50ms", 0.95)),
    Target("utilization >= 0.99 at 1 s", _util("util_1s", 0.99)),
    Target("burst above every PG-backed peer and >= 0.7x plain Celery", _burst),
    Target("round-trip median <= 2x plain Celery's", _rt_median),
    Target("round-trip p99 under every PG-backed peer's", _rt_p99),
    Target("duplicates over HTTP >= 2x new", _http_duplicates),
    Target("recovery within lease + 2 s", _recovery),
    Target("worker RSS growth < 5%", _memory),
    Target("64 MiB request: peak RSS < 4x in every process", _big),
]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for target in TARGETS:
        ok, detail = target.check(results)
        verdicts.append({"target": target.text, "met": ok, "detail": detail})
    return verdicts


def targets_table(verdicts: list[dict[str, Any]]) -> str:
    marks = {True: "met", False: "MISSED", None: "n/a"}
    lines = ["| target | verdict | measured |", "| --- | --- | --- |"]
    for verdict in verdicts:
        lines.append(
            f"| {verdict['target']} | {marks[verdict['met']]} | {verdict['detail']} |"
        )
    return "\n".join(lines)


def _admission_line(figures: dict[str, Any]) -> str:
    parts = []
    for protocol in ("grpc", "http"):
        rates = figures.get(protocol)
        if not isinstance(rates, dict):
            continue
        named = [
            f"{phase.replace('add_task_', '')} {rates[f'{phase}_per_second']:.0f}"
            for phase in ("add_task_new", "add_task_duplicate", "get_task")
            if isinstance(rates.get(f"{phase}_per_second"), int | float)
        ]
        parts.append(f"{protocol} " + ", ".join(named))
    if not parts:
        return f"admission rates: {json.dumps(figures, sort_keys=True)}"
    connections = figures.get("setup", {}).get("connections", "?")
    return f"admission (calls/s, {connections} connections): " + "; ".join(parts)


def extras(results: dict[str, Any]) -> str:
    """Our own scenarios, one line each."""
    lines: list[str] = []
    recovery = results.get("ours_recovery", {}).get("figures")
    if recovery:
        lines.append(
            f"recovery: kill -9 of a busy worker -> task running again in "
            f"{', '.join(f'{s:.1f}' for s in recovery['worker_kill_seconds'])} s "
            f"(lease {recovery['lease_seconds']:g} s); kill -9 of its pool child alone: "
            f"{recovery['child_kill_seconds']:.1f} s"
        )
    memory = results.get("ours_memory", {}).get("figures")
    if memory:
        lines.append(
            f"memory: worker RSS ({memory['processes']} processes) "
            f"{memory['rss_after_warm_up_mib']:.1f} MiB after {memory['warm_up_tasks']} "
            f"tasks, {memory['rss_end_mib']:.1f} MiB after {memory['tasks']} "
            f"({memory['growth_pct']:+.2f}%; peak {memory['rss_peak_after_warm_up_mib']:.1f}"
            f" MiB, {memory['peak_growth_pct']:+.2f}%)"
        )
    big = results.get("ours_big_request", {}).get("figures")
    if big:
        peaks = ", ".join(
            f"{name} {mib:.0f}" for name, mib in big["peak_rss_mib"].items()
        )
        lines.append(
            f"{big['request_mib']} MiB request: {big['status']} in "
            f"{big['end_to_end_seconds']:.1f} s, "
            f"result {'matches' if big['result_matches'] else 'DIFFERS'}; peak RSS MiB "
            f"(limit {big['limit_mib']}): {peaks}"
        )
    profile = results.get("ours_profile", {}).get("figures")
    if profile:
        lines.append(
            f"profile: one client admits {profile['client_submit_per_second']:.0f}/s; a "
            f"worker drains a full queue at {profile['worker_drain_per_second']:.0f}/s"
        )
    sql = results.get("ours_statements", {}).get("figures")
    if sql:
        parts = [
            f"{label} {sql[label]['statements']}"
            for label in (
                "add_task_new",
                "add_task_duplicate",
                "claim",
                "finish_and_take_next",
                "finish_with_queue_empty",
            )
            if label in sql
        ]
        lines.append(
            "SQL statements: " + ", ".join(parts) + "; a byte of bytea is "
            f"{sql['large_insert_sql_bytes_per_request_byte']:.2f} bytes of SQL text"
        )
    admission = results.get("ours_admission", {}).get("figures")
    if admission:
        lines.append(_admission_line(admission))
    for name, result in results.items():
        if not result.get("ok"):
            lines.append(f"FAILED {name}: {result.get('error')}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python -m bench.report [FILE]``: print the tables of a results file again."""
    path = Path(argv[0]) if argv else Path(__file__).parent / "results" / "latest.json"
    document = json.loads(path.read_text())
    results = document["results"]
    print(table(results))
    print()
    print(extras(results))
    print()
    print(targets_table(targets(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
