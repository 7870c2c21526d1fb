"""``make run``'s path end to end: every process at once on SQLite and the filesystem broker.

The platform starts as ``make run`` starts it, ``python -m scheduler_project.run`` after
``manage.py migrate``, in a fresh data folder with neither DATABASE_URL nor
CELERY_BROKER_URL, on free ports. Web, gRPC and the worker then write one SQLite file
at once, which only works with WAL, immediate transactions and a busy timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import ROOT, free_port, wait_until

HTTP_REQUESTS = [f"over http {n}: {'x' * n}".encode() for n in range(24)]
GRPC_REQUESTS = [f"over grpc {n}".encode() for n in range(8)]
# Enough clients at once that web, gRPC and the worker write the SQLite file together.
CLIENTS = 8


@dataclass
class Platform:
    """The supervisor of one ``make run``, its ports and its output."""

    process: subprocess.Popen[bytes]
    web_port: int
    grpc_port: int
    flower_port: int
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def http(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url(path), data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=70) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def answers(self, path: str, port: int | None = None) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"make run exited early:\n{self.log()[-6000:]}")
        url = f"http://127.0.0.1:{port or self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def grpc_serving(self) -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def sqlite_environment(data_dir: Path) -> dict[str, str]:
    """This environment without any database, broker or scheduler setting of its own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
        and not key.startswith(("SCHEDULER_", "CELERY_"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        SCHEDULER_DATA_DIR=str(data_dir),
        SCHEDULER_PROCESSOR="tasks_app.processors:EchoProcessor",
        WEB_CONCURRENCY="2",
        LOG_LEVEL="INFO",
    )
    return env


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    data_dir = tmp_path / "data"
    env = sqlite_environment(data_dir)
    ports = [free_port() for _ in range(3)]
    env.update(
        WEB_PORT=str(ports[0]),
        SCHEDULER_GRPC_PORT=str(ports[1]),
        FLOWER_PORT=str(ports[2]),
    )
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=180,
    )
    assert migrate.returncode == 0, migrate.stderr.decode(errors="replace")
    assert (data_dir / "db.sqlite3").exists()

    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler_project.run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform = Platform(process, *ports, data_dir, log_path)
    try:
        yield platform
    finally:
        _kill_everything_left(process)


def _kill_everything_left(supervisor: subprocess.Popen[bytes]) -> None:
    """After a failure: SIGKILL the supervisor and each process it started."""
    try:
        left = psutil.Process(supervisor.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        left = []
    for process in [*left]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if supervisor.poll() is None:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait(10)


def wait_ready(platform: Platform) -> None:
    wait_until(lambda: platform.answers("/readyz"), 120, 0.5, "web /readyz")
    wait_until(platform.grpc_serving, 60, 0.5, "gRPC health SERVING")
    wait_until(
        lambda: platform.answers("/healthcheck", platform.flower_port),
        60,
        0.5,
        "Flower /healthcheck",
    )
    heartbeat = platform.data_dir / "worker.heartbeat"
    wait_until(heartbeat.exists, 60, 0.5, "the worker's heartbeat file")


def submit_over_grpc(platform: Platform, request: bytes) -> str:
    from tasks_app.grpc_api.generated import scheduler_pb2, scheduler_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{platform.grpc_port}") as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        reply = stub.AddTask(scheduler_pb2.AddTaskRequest(request=request), timeout=30)
    return str(reply.uuid)


def wait_finished(platform: Platform, uuid: str) -> dict[str, object]:
    for _ in range(4):
        status, body = platform.http("GET", f"/api/tasks/{uuid}?wait=30")
        assert status == 200, body
        task: dict[str, object] = json.loads(body)
        if task["status"] in ("done", "error"):
            return task
    raise AssertionError(f"task {uuid} still {task['status']} after 120 s")


def stop(platform: Platform, how: str) -> int:
    """SIGTERM to the supervisor, or Ctrl-C: SIGINT to the terminal's whole group."""
    if how == "sigterm":
        platform.process.send_signal(signal.SIGTERM)
    else:
        os.killpg(platform.process.pid, signal.SIGINT)
    return platform.process.wait(120)


@pytest.mark.parametrize(("how", "returncode"), [("sigterm", 143), ("ctrl-c", 130)])
def test_make_run_serves_tasks_on_sqlite_and_stops_every_process(
    platform: Platform, how: str, returncode: int
) -> None:
    wait_ready(platform)

    def submit_over_http(request: bytes) -> str:
        status, body = platform.http("POST", "/api/tasks", request)
        assert status == 201, body
        return str(json.loads(body)["uuid"])

    with ThreadPoolExecutor(CLIENTS) as clients:
        http = clients.map(submit_over_http, HTTP_REQUESTS)
        over_grpc = clients.map(lambda r: submit_over_grpc(platform, r), GRPC_REQUESTS)
        created = dict(zip(http, HTTP_REQUESTS, strict=True))
        created.update(zip(over_grpc, GRPC_REQUESTS, strict=True))
    assert len(created) == len(HTTP_REQUESTS) + len(GRPC_REQUESTS)

    status, body = platform.http("POST", "/api/tasks", HTTP_REQUESTS[0])
    assert status == 200, body
    assert json.loads(body)["created"] is False

    for uuid, request in created.items():
        task = wait_finished(platform, uuid)
        assert task["status"] == "done", task
        status, result = platform.http("GET", f"/api/tasks/{uuid}/result")
        assert (status, result) == (200, request)

    children = psutil.Process(platform.process.pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    for program in ("gunicorn", "rungrpc", "celery -A scheduler_project worker"):
        assert any(program in command for command in commands), commands
    assert any("flower" in command for command in commands), commands

    assert stop(platform, how) == returncode, platform.log()[-6000:]
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]

    log = platform.log()
    for name in ("web", "grpc", "worker", "flower"):
        assert f"{name} stopped (rc=0)" in log, log[-6000:]
    assert "SIGKILL" not in log
    assert "database is locked" not in log
    # Flower's own inspect calls can log an ERROR when they read a control message that
    # kombu's filesystem transport is still writing; it asks again, and it is not ours.
    errors = [
        line
        for line in log.splitlines()
        if " ERROR " in line and " flower | " not in line
    ]
    assert errors == []
