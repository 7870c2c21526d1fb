"""Where our time goes, on each side of the queue.

The client: pyinstrument while one thread submits a batch through
``Scheduler.add_task`` with no worker running. The worker: py-spy on a worker (main
process and pool) that then starts and drains that batch, which also gives its drain
rate, tasks per second from the first completion to the last, with admission out of the
way. Samples are summed by the code they are in. ``BENCH_PROFILE=1 make bench`` adds it
(``BENCH_ONLY=ours_profile`` runs it alone); the raw stacks land in
``bench/results/logs/ours_profile``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import workloads
from bench.services import Services
from bench.sizes import Sizes
from bench.systems.ours import Ours

PY_SPY = str(Path(sys.executable).with_name("py-spy"))

# Inclusive shares worth naming: a sample counts for each label one of its frames matches.
LABELS = {
    # psycopg running a statement: sending it, the server's time, the answer's arrival.
    "psycopg executing statements (round trips)": r"^(Connection\.)?wait \(psycopg/",
    "  of which in the send call": r"_execute_send \(psycopg/",
    "waiting on Redis (socket reads)": r"(_read_from_socket|read_response) \(redis/",
    # Turning querysets into SQL text, and building the querysets: CPU in our process.
    "Django ORM: compiling SQL": (
        r"(^|\.)(as_sql|compile|pre_sql_setup|setup_query|get_select|get_order_by)"
        r" \(django/db/models/sql/"
    ),
    "Django ORM: building querysets": (
        r"(^|\.)(_filter_or_exclude|_chain|_clone|clone|annotate|values|only"
        r"|select_for_update) \(django/db/models/"
    ),
    "logging": r"\(logging/__init__\.py",
    "admission.admit": r"^admit \(tasks_app/admission\.py",
    "admission: publish after commit": r"^publish \(tasks_app/dispatch\.py",
    "leases.claim": r"^claim \(tasks_app/leases\.py",
    "leases.finish": r"^finish \(tasks_app/leases\.py",
    "Celery result backend (store_result)": r"store_result \(",
    "Celery events": r"\(celery/events/",
    "Celery Ignore bookkeeping (einfo)": r"\(billiard/einfo\.py",
    "processor": r"\(tasks_app/processors/",
}
# The pool's time inside run_task, and its database thread's time in the statements it
# runs for it (tasks_app.db_thread: those stacks start in concurrent.futures).
TASK_FRAME = (
    r"^run_task \(tasks_app/tasks\.py"
    r"|^(_claim|finish|hand_over|finish_or_give_back) \(tasks_app/(tasks|runner)\.py"
)


def summarize(raw: Path, within: str | None = None, top: int = 12) -> dict[str, Any]:
    """Totals of collapsed stacks: labelled shares and the hottest leaves.

    With ``within``, only the samples with a frame matching it count (for the worker:
    the time its pool spends inside ``run_task``).
    """
    totals: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    samples = everything = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        everything += count
        if within is not None and not any(re.search(within, f) for f in frames):
            continue
        samples += count
        leaves[frames[-1]] += count
        for label, pattern in LABELS.items():
            if any(re.search(pattern, frame) for frame in frames):
                totals[label] += count
    if not samples:
        return {"samples": 0}
    return {
        "samples": samples,
        "share_of_all_samples_pct": round(samples * 100 / everything, 1),
        "share_pct": {
            label: round(totals[label] * 100 / samples, 1)
            for label in LABELS
            if totals[label]
        },
        "hottest_leaves": [
            {"frame": frame, "pct": round(count * 100 / samples, 1)}
            for frame, count in leaves.most_common(top)
        ],
    }


def profile(env: Services, tmp: Path, cap: int, sizes: Sizes) -> dict[str, Any]:
    from pyinstrument import Profiler

    count = sizes.profile_tasks
    system = Ours(env, cap, tmp, start_worker=False)
    try:
        client = Profiler(interval=0.001)
        tag = workloads.new_tag("profile")
        client.start()
        started = time.monotonic()
        handles = [system.submit(0, workloads.request(0, tag, i)) for i in range(count)]
        submit_seconds = time.monotonic() - started
        client.stop()
        (tmp / "client.pyinstrument.txt").write_text(
            client.output_text(unicode=False, color=False)
        )
        client_raw = tmp / "client.collapsed.txt"
        _collapsed_from_pyinstrument(client, client_raw)

        worker = system.cluster.start_worker(concurrency=cap, name="bench")
        raw = tmp / "worker.pyspy.txt"
        spy = _py_spy(worker.pid, raw, tmp / "py-spy.log")
        done = workloads.wait_finished(system, handles, timeout=count + 120)
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        times = sorted(done.values())
        return {
            "tasks": count,
            "client_submit_per_second": round(count / submit_seconds, 1),
            "worker_drain_per_second": round((count - 1) / (times[-1] - times[0]), 1),
            "client": summarize(client_raw, within=r"^add_task \("),
            "worker": summarize(raw, within=TASK_FRAME) if raw.exists() else {},
        }
    finally:
        system.close()


def _py_spy(pid: int, raw: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--idle",
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _collapsed_from_pyinstrument(profiler: Any, out: Path) -> None:
    """pyinstrument's session as collapsed stacks (milliseconds), in py-spy's spelling."""
    lines: list[str] = []

    def walk(frame: Any, prefix: list[str]) -> None:
        if frame.function.startswith("["):  # pyinstrument's own "[self]" and the like
            stack = prefix or [frame.function]
        else:
            path = _short(frame.file_path or "")
            stack = [*prefix, f"{frame.function} ({path}:{frame.line_no})"]
        own = frame.time - sum(child.time for child in frame.children)
        if own > 0:
            lines.append(f"{';'.join(stack)} {max(1, round(own * 1000))}")
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


def main(argv: list[str]) -> int:
    """``python -m bench.profile STACKS [WITHIN]``: summarize collapsed stacks again."""
    import json

    print(
        json.dumps(
            summarize(Path(argv[0]), argv[1] if len(argv) > 1 else None), indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
