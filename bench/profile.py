"""Where our time goes: py-spy on a worker (main process and pool) during a burst, and
pyinstrument on the submitting client, with the samples summed by the code they are in.

``BENCH_PROFILE=1 make bench`` adds it (``BENCH_ONLY=ours_profile`` runs it alone); the
flame data lands in ``bench/results/logs/ours_profile``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import workloads
from bench.services import Services
from bench.systems.ours import Ours

PY_SPY = str(Path(sys.executable).with_name("py-spy"))

# Inclusive shares worth naming: a sample counts for each label one of its frames matches.
LABELS = {
    "waiting on PostgreSQL (psycopg wait)": r"\bwait \(psycopg/",
    "waiting on Redis (socket reads)": r"(_read_response|read_response) \(redis/",
    "Django ORM: compiling SQL": r"\(django/db/models/sql/compiler\.py",
    "logging": r"\(logging/__init__\.py",
    "leases.claim": r"^claim \(tasks_app/leases\.py",
    "leases.finish": r"^finish \(tasks_app/leases\.py",
    "admission.admit": r"^admit \(tasks_app/admission\.py",
    "Celery result backend (store_result)": r"store_result \(",
    "Celery events (task events to Redis)": r"\(celery/events/",
    "kombu publish": r"publish \(kombu/",
    "processor": r"\(tasks_app/processors/",
}


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Totals of a py-spy raw (collapsed) file: labelled shares and the hottest leaves."""
    totals: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        leaves[frames[-1]] += count
        for label, pattern in LABELS.items():
            if any(re.search(pattern, frame) for frame in frames):
                totals[label] += count
    return {
        "samples": samples,
        "share_pct": {
            label: round(totals[label] * 100 / samples, 1)
            for label in LABELS
            if samples
        },
        "hottest_leaves": [
            {"frame": frame, "pct": round(count * 100 / samples, 1)}
            for frame, count in leaves.most_common(top)
        ],
    }


def profile(env: Services, tmp: Path, cap: int, quick: bool) -> dict[str, Any]:
    system = Ours(env, cap, tmp)
    try:
        workloads.warm_up(system)
        worker = system.cluster.workers[0]
        raw = tmp / "worker.pyspy.txt"
        seconds = 10 if quick else 20
        spy = subprocess.Popen(
            [
                PY_SPY,
                "record",
                "--pid",
                str(worker.pid),
                "--subprocesses",
                "--idle",
                "--rate",
                "200",
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "py-spy.log").open("wb"),
        )
        from pyinstrument import Profiler

        client = Profiler(interval=0.001)
        client.start()
        figure = workloads.burst(system, 500 if quick else 2000)
        client.stop()
        spy.wait(seconds + 60)
        (tmp / "client.pyinstrument.txt").write_text(
            client.output_text(unicode=False, color=False)
        )
        client_raw = tmp / "client.collapsed.txt"
        _collapsed_from_pyinstrument(client, client_raw)
        return {
            "burst": figure,
            "worker": summarize(raw)
            if raw.exists()
            else {"error": "py-spy wrote nothing"},
            "client": summarize(client_raw),
        }
    finally:
        system.close()


def _collapsed_from_pyinstrument(profiler: Any, out: Path) -> None:
    """pyinstrument's session as collapsed stacks, in py-spy's frame spelling."""
    lines: list[str] = []

    def walk(frame: Any, prefix: list[str]) -> None:
        name = f"{frame.function} ({_short(frame.file_path or '')}:{frame.line_no})"
        stack = [*prefix, name]
        own = frame.time - sum(child.time for child in frame.children)
        if own > 0:
            lines.append(f"{';'.join(stack)} {round(own * 1000)}")
        for child in frame.children:
            walk(child, stack)

    root = profiler.last_session.root_frame()
    if root is not None:
        walk(root, [])
    out.write_text("\n".join(lines) + "\n")


def _short(path: str) -> str:
    for marker in ("site-packages/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    return path.removeprefix(root)
