"""Run every benchmark, one process each, then print the table and write the JSON.

Environment: ``BENCH_QUICK=1`` for a short run (CI keeps it from rotting; it asserts
no times); ``BENCH_ONLY=ours,celery_redis`` to run some benchmarks only;
``BENCH_RESULTS`` for another output file than ``bench/results/latest.json``;
``BENCH_PROFILE=1`` to add the profile of our worker and client (``bench.profile``);
``BENCH_MERGE=1`` to replace only the benchmarks run now in an existing results file.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(
    os.environ.get("BENCH_RESULTS", ROOT / "bench" / "results" / "latest.json")
)

STANDARD = [
    "ours",
    "celery_redis",
    "celery_dcr_stock",
    "celery_dcr_reused",
    "procrastinate",
    "dramatiq",
]
SCENARIOS = [
    "ours_recovery",
    "ours_memory",
    "ours_big_request",
    "ours_big_request_ssb",
    "ours_statements",
]
# A benchmark that has not finished in this long has hung: it is stopped and reported.
TIMEOUT_SECONDS = 1800


def benchmarks() -> list[str]:
    names = STANDARD + SCENARIOS
    if (ROOT / "bench" / "grpc_http_rates.py").exists():
        names.append("ours_admission")
    only = os.environ.get("BENCH_ONLY")
    if only:
        wanted = {name.strip() for name in only.split(",") if name.strip()}
        return [name for name in [*names, "ours_profile"] if name in wanted]
    if os.environ.get("BENCH_PROFILE", "") not in ("", "0"):
        names.append("ours_profile")
    return names


def run_one(name: str, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        argv = [sys.executable, "-m", "bench.run_system", name, str(out)]
        if quick:
            argv.append("--quick")
        started = time.monotonic()
        try:
            subprocess.run(argv, cwd=ROOT, timeout=TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {TIMEOUT_SECONDS} s"}
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
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    names = benchmarks()
    document: dict[str, Any] = {
        "quick": quick,
        "cap": 4,
        "request_bytes": 1024,
        "machine": machine(),
    }
    results: dict[str, Any] = {}
    for name in names:
        print(f"bench: running {name}{' (quick)' if quick else ''}", flush=True)
        results[name] = run_one(name, quick)
        state = "ok" if results[name].get("ok") else results[name].get("error")
        print(f"bench: {name}: {state} in {results[name].get('seconds')} s", flush=True)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if os.environ.get("BENCH_MERGE", "") not in ("", "0") and RESULTS.exists():
        # Re-run some benchmarks into an earlier file: each result keeps its own time
        # and load average, and the file says which were merged in.
        earlier = json.loads(RESULTS.read_text())
        merged = earlier.get("merged", []) + sorted(results)
        results = {**earlier.get("results", {}), **results}
        document = {**document, "machine": earlier.get("machine", document["machine"])}
        document["merged"] = merged
    document["results"] = results
    verdicts = report.targets(results)
    document["targets"] = verdicts

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")

    print()
    print(report.table(results))
    print()
    print(report.extras(results))
    print()
    print(report.targets_table(verdicts))
    print()
    print(f"bench: raw figures written to {RESULTS}")
    failed = [name for name in names if not results[name].get("ok")]
    if failed:
        print(f"bench: these benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
