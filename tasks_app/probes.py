"""Container probes that cost no broker round trip and load no Django.

``python -m tasks_app.probes worker --max-age 30`` exits 0 while the worker's lease
keeper has touched its heartbeat file (SCHEDULER_WORKER_HEARTBEAT_FILE) within the last
30 seconds, and 1 otherwise, saying why on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HEARTBEAT_VARIABLE = "SCHEDULER_WORKER_HEARTBEAT_FILE"
DEFAULT_MAX_AGE_SECONDS = 30.0


def heartbeat_age_seconds(path: Path, now: float | None = None) -> float | None:
    """Seconds since ``path`` was last touched, or ``None`` if it does not exist."""
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - modified)


def check_worker(path: Path, max_age_seconds: float) -> str | None:
    """Why the worker at ``path`` counts as dead, or ``None`` when it is alive."""
    age = heartbeat_age_seconds(path)
    if age is None:
        return f"no heartbeat file at {path}: the worker has not become ready yet"
    if age > max_age_seconds:
        # The keeper touches the file only after a tick that reached the database, so a
        # stale file means a wedged main process or a database out of reach that long.
        return (
            f"the heartbeat {path} is {age:.1f} s old (limit {max_age_seconds:g} s): "
            "the lease keeper has stopped ticking"
        )
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks_app.probes",
        description="Liveness and readiness probes that load no Django.",
    )
    probes = parser.add_subparsers(dest="probe", required=True)
    worker = probes.add_parser(
        "worker", help="the Celery worker's lease keeper is ticking"
    )
    worker.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"the heartbeat file (default: ${HEARTBEAT_VARIABLE})",
    )
    worker.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE_SECONDS,
        help="the oldest heartbeat that still counts, in seconds "
        f"(default {DEFAULT_MAX_AGE_SECONDS:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.file or os.environ.get(HEARTBEAT_VARIABLE)
    if not path:
        print(
            f"worker probe: set {HEARTBEAT_VARIABLE} (the worker writes it) or --file",
            file=sys.stderr,
        )
        return 2
    problem = check_worker(Path(path), args.max_age)
    if problem is not None:
        print(f"worker probe: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
