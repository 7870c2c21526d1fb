"""Our platform: the Scheduler's Python API (and HTTP when the API exists), real workers.

The bench process is a client like any other: it builds Django from the same
environment as the workers, submits with ``Scheduler.add_task``, and reads
``finished_at`` from the task table, the time of the statement that set ``done``.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.services import Services
from bench.sizes import Sizes
from tests.harness import ROOT, Cluster, free_port, wait_until

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
FINISHED = ("done", "error")
FAILED = "error"
BENCH_PROCESSOR = "bench.processors:SleepEchoProcessor"
ECHO_PROCESSOR = "tasks_app.processors:EchoProcessor"


def our_cluster(
    services: Services, workdir: Path, cap: int, processor: str = BENCH_PROCESSOR
) -> Cluster:
    """The workers' environment, with the deployment's defaults where tests shorten them."""
    cluster = Cluster(services.database_url, services.broker_url, workdir)
    cluster.env.pop("TEST_CALL_LOG", None)
    cluster.configure(
        scheduler_processor=processor,
        scheduler_num_workers=cap,
        # The burst and the memory run queue thousands at once; the bound is not measured.
        scheduler_queue_size=1_000_000,
        scheduler_lease_seconds=15,
        scheduler_reconcile_interval=1.0,
        log_level="INFO",
        django_settings_module="bench.settings",
    )
    return cluster


def setup_django(cluster: Cluster) -> None:
    """Build Django in this process from the cluster's environment, and migrate."""
    for key, value in cluster.env.items():
        if key.startswith(("SCHEDULER_", "CELERY_", "DJANGO_")) or key in (
            "DATABASE_URL",
            "LOG_LEVEL",
        ):
            os.environ[key] = value
    os.environ["LOG_LEVEL"] = "WARNING"  # this process's own log: the bench's output
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def finished_times(uuids: list[str]) -> dict[str, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT uuid::text, extract(epoch FROM finished_at)::float8 "
            "FROM scheduler_task WHERE uuid = ANY(%s::uuid[]) AND status = ANY(%s)",
            [uuids, list(FINISHED)],
        )
        return {uuid: at for uuid, at in cursor.fetchall()}


def count_finished(uuids: list[str]) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM scheduler_task "
            "WHERE uuid = ANY(%s::uuid[]) AND status = ANY(%s)",
            [uuids, list(FINISHED)],
        )
        return int(cursor.fetchone()[0])


def count_failed(uuids: list[str]) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM scheduler_task "
            "WHERE uuid = ANY(%s::uuid[]) AND status = %s",
            [uuids, FAILED],
        )
        return int(cursor.fetchone()[0])


def http_api_missing() -> str | None:
    """Why the HTTP round trip cannot run here, or ``None`` when it can."""
    if not (ROOT / "tasks_app" / "api").is_dir():
        return "no HTTP API in tasks_app/api yet"
    from django.urls import Resolver404, resolve

    try:
        resolve("/api/tasks")
    except Resolver404:
        return "no route for POST /api/tasks yet"
    except Exception as exc:  # the URLconf of a tree being worked on may not import
        return f"the URLconf does not load: {type(exc).__name__}: {exc}"
    return None


class HttpClient:
    """gunicorn serving the HTTP API on a free port, and one kept-alive connection."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self._log = (workdir / "gunicorn.log").open("ab")
        self.process = subprocess.Popen(
            [
                GUNICORN,
                "scheduler_project.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        wait_until(self._healthy, 60, interval=0.3, message="gunicorn to answer")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("gunicorn exited; see gunicorn.log")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def submit(self, seconds: float, payload: bytes) -> str:
        self.connection.request(
            "POST",
            "/api/tasks",
            body=payload,
            headers={"Content-Type": "application/octet-stream"},
        )
        response = self.connection.getresponse()
        body = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"POST /api/tasks answered {response.status}: {body!r}")
        return str(json.loads(body)["uuid"])

    def stop(self) -> None:
        self.connection.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


class Ours:
    name = "ours"

    def __init__(
        self, services: Services, cap: int, workdir: Path, start_worker: bool = True
    ) -> None:
        self.cap = cap
        self.cluster = our_cluster(services, workdir, cap)
        setup_django(self.cluster)
        from tasks_app.scheduler import get_scheduler

        self.scheduler = get_scheduler()
        if start_worker:
            self.cluster.start_worker(concurrency=cap, name="bench")

    def submit(self, seconds: float, payload: bytes) -> str:
        return str(self.scheduler.add_task(payload))

    def count_finished(self, handles: list[str]) -> int:
        return count_finished(handles)

    def finished(self, handles: list[str]) -> dict[str, float]:
        return finished_times(handles)

    def count_failed(self, handles: list[str]) -> int:
        return count_failed(handles)

    def extra_figures(self, sizes: Sizes) -> dict[str, Any]:
        from bench import workloads

        missing = http_api_missing()
        if missing:
            return {"round_trip_http": {"skipped": missing}}
        try:
            client = HttpClient(self.cluster.env, self.cluster.workdir)
        except Exception as exc:  # the API is young: report it, keep the other figures
            return {"round_trip_http": {"error": f"{type(exc).__name__}: {exc}"}}
        try:
            workloads.warm_up(_Via(self, client.submit), sizes.http_warm_up_tasks)
            figure = workloads.round_trip(
                self, workloads.ROUND_TRIP_RATE, sizes.round_trip_seconds, client.submit
            )
        except Exception as exc:
            figure = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            client.stop()
        return {"round_trip_http": figure}

    def close(self) -> None:
        self.cluster.stop()


class _Via:
    """``system`` with another submit path (HTTP), for the warm-up."""

    def __init__(self, system: Ours, submit: Any) -> None:
        self.name, self.cap, self._system, self.submit = (
            "ours",
            system.cap,
            system,
            submit,
        )

    def count_finished(self, handles: list[str]) -> int:
        return self._system.count_finished(handles)

    def finished(self, handles: list[str]) -> dict[str, float]:
        return self._system.finished(handles)

    def count_failed(self, handles: list[str]) -> int:
        return self._system.count_failed(handles)
