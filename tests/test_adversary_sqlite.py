"""The embedded defaults (SQLite, the filesystem broker) under several workers at once.

``make run`` starts one worker, but nothing stops a second one on the same data folder:
the cap, deduplication and recovery must hold there too, with SQLite's file lock in
place of PostgreSQL's row locks and a broker that loses a killed worker's messages.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    ROOT,
    CallLog,
    Worker,
    submit_from_processes,
    task_request,
    wait_until,
)

NUM_WORKERS = 2


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    """No DATABASE_URL, no CELERY_BROKER_URL: what ``make run`` has by default."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCHEDULER_", "CELERY_", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "PYTHONPATH": str(ROOT),
            "SCHEDULER_PROCESSOR": "tests.processors:RecordingProcessor",
            "SCHEDULER_DATA_DIR": str(tmp_path / "data"),
            "TEST_CALL_LOG": str(tmp_path / "calls.log"),
            "SCHEDULER_LEASE_SECONDS": "3",
            "SCHEDULER_RECONCILE_INTERVAL": "0.5",
            "SCHEDULER_NUM_WORKERS": str(NUM_WORKERS),
        }
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )
    return env


@pytest.fixture
def workers(embedded_env: dict[str, str], tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(embedded_env, f"embedded{i}", 2, tmp_path) for i in range(2)]
    try:
        yield [worker.wait_ready() for worker in started]
    finally:
        for worker in started:
            worker.stop()


def statuses(database: Path) -> dict[str, int]:
    with sqlite3.connect(database, timeout=30) as db:
        rows = db.execute("SELECT status, count(*) FROM scheduler_task GROUP BY status")
        return dict(rows.fetchall())


def peak_concurrency(log: CallLog, killed_at: float) -> int:
    """As ``CallLog.peak_concurrency``, but a call cut short by the kill ends then."""
    edges: list[tuple[float, int]] = []
    for call in log.calls():
        edges += [(call.start, 1), (call.end or killed_at, -1)]
    peak = running = 0
    for _, step in sorted(edges):
        running += step
        peak = max(peak, running)
    return peak


def test_two_workers_on_sqlite_keep_the_cap_dedup_and_recover_a_killed_one(
    embedded_env: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    database = tmp_path / "data" / "db.sqlite3"
    log = CallLog(tmp_path / "calls.log")
    requests = [task_request(id=f"embedded {i}", sleep=0.3) for i in range(40)]

    # 3 processes x 4 threads each submit all 40: 480 admissions, 40 tasks.
    answers = submit_from_processes(embedded_env, requests, processes=3, threads=4)
    assert [answer for answer in answers if "error" in answer] == []
    assert len({answer["uuid"] for answer in answers}) == 40
    assert sum(1 for answer in answers if answer["created"]) == 40

    wait_until(
        lambda: statuses(database).get("processing", 0) == NUM_WORKERS,
        60,
        message="both slots in use",
    )
    workers[0].kill()
    killed_at = time.time()
    wait_until(
        lambda: statuses(database).get("done", 0) == 40,
        120,
        message="every task done",
    )

    assert statuses(database) == {"done": 40}
    assert peak_concurrency(log, killed_at) <= NUM_WORKERS
    calls = log.calls_per_hash()
    assert len(calls) == 40
    # A task the killed worker was running ran again; no other ran twice.
    assert sum(n - 1 for n in calls.values()) <= NUM_WORKERS
