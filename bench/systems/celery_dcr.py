"""Celery with django-celery-results on PostgreSQL, stock or with CELERY_DB_REUSE_MAX."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.services import Services
from bench.systems.celery_redis import celery_worker_argv
from bench.systems.process import Daemon, base_env
from tests.harness import ROOT

FINISHED_STATES = ("SUCCESS", "FAILURE")


class CeleryDjangoResults:
    def __init__(
        self, services: Services, cap: int, workdir: Path, reuse_max: int | None
    ) -> None:
        self.name = "celery_dcr_reused" if reuse_max else "celery_dcr_stock"
        self.cap = cap
        env = base_env(
            BENCH_BROKER_URL=services.broker_url,
            BENCH_DATABASE_URL=services.database_url,
            DJANGO_SETTINGS_MODULE="bench.apps.dcr_settings",
        )
        if reuse_max:
            env["BENCH_DB_REUSE_MAX"] = str(reuse_max)
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        os.environ.update(
            {k: v for k, v in env.items() if k.startswith(("BENCH_", "DJANGO_"))}
        )
        import django

        django.setup()  # the result backend's models are imported with the app
        from bench.apps.celery_dcr import app

        self.app = app
        self.db = psycopg.connect(services.database_url, autocommit=True)
        self.worker = Daemon(
            celery_worker_argv("bench.apps.celery_dcr", cap),
            env,
            workdir / f"{self.name}.log",
        )

    def submit(self, seconds: float, payload: bytes) -> str:
        return self.app.send_task("bench.work", args=[seconds, payload.decode()]).id

    def count_finished(self, handles: list[str]) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM django_celery_results_taskresult "
            "WHERE task_id = ANY(%s) AND status = ANY(%s)",
            (handles, list(FINISHED_STATES)),
        ).fetchone()
        return int(row[0]) if row else 0

    def finished(self, handles: list[str]) -> dict[str, float]:
        rows = self.db.execute(
            "SELECT task_id, extract(epoch FROM date_done)::float8 "
            "FROM django_celery_results_taskresult "
            "WHERE task_id = ANY(%s) AND status = ANY(%s)",
            (handles, list(FINISHED_STATES)),
        ).fetchall()
        return {task_id: at for task_id, at in rows}

    def count_failed(self, handles: list[str]) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM django_celery_results_taskresult "
            "WHERE task_id = ANY(%s) AND status = 'FAILURE'",
            (handles,),
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.worker.stop()
        self.db.close()
        print(self.worker.log_tail(3), file=sys.stderr)
