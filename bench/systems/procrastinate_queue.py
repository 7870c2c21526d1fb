"""Procrastinate: jobs in PostgreSQL; the ``succeeded`` event's time is the completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.services import Services
from bench.systems.process import Daemon, base_env
from tests.harness import ROOT

PROCRASTINATE = str(Path(sys.executable).with_name("procrastinate"))
APP = "bench.apps.procrastinate_jobs.app"


class Procrastinate:
    name = "procrastinate"

    def __init__(self, services: Services, cap: int, workdir: Path) -> None:
        self.cap = cap
        env = base_env(BENCH_DATABASE_URL=services.database_url)
        subprocess.run(
            [PROCRASTINATE, "--app", APP, "schema", "--apply"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.environ["BENCH_DATABASE_URL"] = services.database_url
        from bench.apps import procrastinate_jobs

        self.task = procrastinate_jobs.work
        self._opened = procrastinate_jobs.app.open()
        self._opened.__enter__()
        self.db = psycopg.connect(services.database_url, autocommit=True)
        self.worker = Daemon(
            [PROCRASTINATE, "--app", APP, "worker", "--concurrency", str(cap)],
            env,
            workdir / "procrastinate.log",
        )

    def submit(self, seconds: float, payload: bytes) -> str:
        return str(self.task.defer(seconds=seconds, payload=payload.decode()))

    def count_finished(self, handles: list[str]) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) "
            "AND status IN ('succeeded', 'failed')",
            ([int(h) for h in handles],),
        ).fetchone()
        return int(row[0]) if row else 0

    def finished(self, handles: list[str]) -> dict[str, float]:
        rows = self.db.execute(
            "SELECT job_id, max(extract(epoch FROM at))::float8 FROM procrastinate_events "
            "WHERE job_id = ANY(%s) AND type IN ('succeeded', 'failed') GROUP BY job_id",
            ([int(h) for h in handles],),
        ).fetchall()
        return {str(job_id): at for job_id, at in rows}

    def count_failed(self, handles: list[str]) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) "
            "AND status = 'failed'",
            ([int(h) for h in handles],),
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.worker.stop()
        self._opened.__exit__(None, None, None)
        self.db.close()
        print(self.worker.log_tail(3), file=sys.stderr)
