"""Run every benchmark, one process each, then print the table and write the JSON.

Environment: ``BENCH_QUICK=1`` for a short run; ``BENCH_SMOKE=1`` for every benchmark
at its smallest (CI runs it so that the benchmarks cannot rot; it writes
``bench/results/smoke.json`` rather than ``latest.json``); the sizes of each are in
``bench.sizes``. ``BENCH_ONLY=ours,celery_redis`` to run some benchmarks only;
``BENCH_RESULTS`` for another output file than ``bench/results/latest.json``;
``BENCH_PROFILE=1`` to add the profile of our worker and client (``bench.profile``);
``BENCH_MERGE=1`` to replace only the benchmarks run now in an existing results file.

The exit status is 1 when any benchmark failed: it raised, hung, or produced figures
that ``bench.checks`` found incomplete (a task not done, a figure missing). No time is
asserted, in any mode.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.sizes import SMOKE, ModeError, Sizes, from_environment

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"

STANDARD = [
    "ours",
    "celery_redis",
    "celery_dcr_stock",
    "celery_dcr_reused",
    "procrastinate",
    "dramatiq",
]
SCENARIOS = [
    "interleaved_round_trip",
    "ours_recovery",
    "ours_memory",
    "ours_big_request",
    "ours_big_request_ssb",
    "ours_statements",
]


class UnknownBenchmark(ValueError):
    """BENCH_ONLY named a benchmark that does not exist: use the names listed."""


def benchmarks() -> list[str]:
    names = STANDARD + SCENARIOS
    if (ROOT / "bench" / "grpc_http_rates.py").exists():
        names.append("ours_admission")
    only = os.environ.get("BENCH_ONLY")
    if only:
        wanted = {name.strip() for name in only.split(",") if name.strip()}
        known = [*names, "ours_profile"]
        unknown = sorted(wanted - set(known))
        if unknown:
            # A misspelt name would otherwise run nothing and pass.
            raise UnknownBenchmark(
                f"BENCH_ONLY names no benchmark {', '.join(unknown)}; "
                f"the benchmarks are {', '.join(known)}"
            )
        return [name for name in known if name in wanted]
    if os.environ.get("BENCH_PROFILE", "") not in ("", "0"):
        names.append("ours_profile")
    return names


def results_path(sizes: Sizes) -> Path:
    """Where the figures go: a smoke run's never replace a measured run's."""
    default = RESULTS_DIR / ("smoke.json" if sizes is SMOKE else "latest.json")
    return Path(os.environ.get("BENCH_RESULTS", default))


def run_one(name: str, sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        argv = [sys.executable, "-m", "bench.run_system", name, str(out)]
        argv += ["--mode", sizes.mode]
        timeout = sizes.timeout_seconds
        started = time.monotonic()
        try:
            subprocess.run(argv, cwd=ROOT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:g} s"}
        if not out.exists():
            return {
                "ok": False,
                "error": "the benchmark process ended without writing its figures",
                "seconds": round(time.monotonic() - started, 1),
            }
        return dict(json.loads(out.read_text()))


def _command(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    packages = [
        "celery",
        "kombu",
        "redis",
        "Django",
        "django-celery-results",
        "psycopg",
        "procrastinate",
        "dramatiq",
    ]
    versions: dict[str, str] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": _command("psql", "--version"),
        "redis": _command("redis-server", "--version"),
        "packages": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    try:
        sizes = from_environment()
        names = benchmarks()
    except (ModeError, UnknownBenchmark) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    results_file = results_path(sizes)
    document: dict[str, Any] = {
        "mode": sizes.mode,
        "quick": sizes.mode == "quick",
        "cap": 4,
        "request_bytes": 1024,
        "machine": machine(),
    }
    results: dict[str, Any] = {}
    label = "" if sizes.mode == "full" else f" ({sizes.mode})"
    for name in names:
        print(f"bench: running {name}{label}", flush=True)
        results[name] = run_one(name, sizes)
        state = "ok" if results[name].get("ok") else results[name].get("error")
        print(f"bench: {name}: {state} in {results[name].get('seconds')} s", flush=True)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if os.environ.get("BENCH_MERGE", "") not in ("", "0") and results_file.exists():
        # Re-run some benchmarks into an earlier file: each result keeps its own time
        # and load average, and the file says which were merged in.
        earlier = json.loads(results_file.read_text())
        merged = earlier.get("merged", []) + sorted(results)
        results = {**earlier.get("results", {}), **results}
        document = {**document, "machine": earlier.get("machine", document["machine"])}
        document["merged"] = merged
    document["results"] = results
    verdicts = report.targets(results)
    document["targets"] = verdicts

    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(document, indent=2) + "\n")

    print()
    print(report.table(results))
    print()
    print(report.extras(results))
    print()
    print(report.targets_table(verdicts))
    print()
    if sizes is SMOKE:
        print("bench: a smoke run: it proves the code runs; its times mean nothing")
    print(f"bench: raw figures written to {results_file}")
    failed = [name for name in names if not results[name].get("ok")]
    if failed:
        print(f"bench: these benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
