"""The slot lock under concurrent claims from many processes, even when its row is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from tasks_app.models import SchedulerSwitch, SlotLock, Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import ROOT, Cluster, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def start_claimers(
    env: dict[str, str], processes: int, num_workers: int, delay: float = 3.0
) -> list[subprocess.Popen[bytes]]:
    start_at = time.time() + delay
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.claimer",
                "--start-at",
                str(start_at),
                "--num-workers",
                str(num_workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]


def waiting_inserts(
    database_url: str, table: str = "scheduler_slot_lock", function: str = ""
) -> int:
    """How many sessions wait to insert into ``table`` behind another's row.

    On PostgreSQL the insert may run inside one of our functions (``function``), where
    pg_stat_activity shows the call, not the insert.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND (query LIKE %s OR (%s <> '' AND query LIKE %s))",
            (f'INSERT INTO "{table}"%', function, f"SELECT * FROM {function}(%"),
        ).fetchone()
    return int(row[0]) if row else 0


def finish(proc: subprocess.Popen[bytes]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode().strip()


def claim_at_once(env: dict[str, str], processes: int, num_workers: int) -> list[str]:
    return [finish(proc) for proc in start_claimers(env, processes, num_workers)]


def test_concurrent_claims_never_take_more_slots_than_the_cap(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    for i in range(12):
        scheduler.add_task(f"request {i}".encode())
    SlotLock.objects.get_or_create(pk=1)

    answers = claim_at_once(cluster.env, processes=8, num_workers=2)

    assert len([answer for answer in answers if answer != "none"]) == 2, answers
    assert TaskRecord.objects.filter(status=Status.PROCESSING).count() == 2


def test_claims_that_find_the_lock_row_missing_still_hold_the_cap(
    cluster: Cluster, scheduler: Scheduler, live_database_url: str
) -> None:
    for i in range(12):
        scheduler.add_task(f"request {i}".encode())
    SlotLock.objects.all().delete()

    # Another session re-creates the row and holds it uncommitted, so that every
    # claimer finds it missing and queues behind that insert: the widest form of the
    # race between making the row again and locking it.
    with psycopg.connect(live_database_url, autocommit=False) as other:
        other.execute("INSERT INTO scheduler_slot_lock (id) VALUES (1)")
        claimers = start_claimers(cluster.env, processes=8, num_workers=2, delay=1.0)
        wait_until(
            lambda: waiting_inserts(live_database_url, function="scheduler_claim") == 8,
            60,
            message="every claimer to wait behind the uncommitted row",
        )
        other.commit()
        answers = [finish(proc) for proc in claimers]

    assert len([answer for answer in answers if answer != "none"]) == 2, answers
    assert TaskRecord.objects.filter(status=Status.PROCESSING).count() == 2


def test_admissions_that_find_the_switch_row_missing_still_hold_the_queue_bound(
    cluster: Cluster, live_database_url: str
) -> None:
    SchedulerSwitch.objects.all().delete()
    cluster.configure(scheduler_queue_size=3)
    requests = [f"bound {i}".encode() for i in range(2)]

    with psycopg.connect(live_database_url, autocommit=False) as other:
        other.execute("INSERT INTO scheduler_switch (id, closed) VALUES (1, false)")
        submitters = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.submitter",
                    "--threads",
                    "1",
                    *[request.hex() + f"{n:02x}" for request in requests],
                ],
                cwd=ROOT,
                env=cluster.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for n in range(4)
        ]
        wait_until(
            lambda: (
                waiting_inserts(
                    live_database_url, "scheduler_switch", "scheduler_admit"
                )
                == 4
            ),
            60,
            message="every submitter to wait behind the uncommitted row",
        )
        other.commit()
        answers = [
            json.loads(line)
            for proc in submitters
            for line in finish(proc).splitlines()
        ]

    assert TaskRecord.objects.filter(status=Status.QUEUED).count() == 3, answers
    assert sum(1 for answer in answers if answer.get("error") == "queue_full") == 5
