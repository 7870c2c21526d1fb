"""Servers as a deployment runs them, for the security tests: production settings.

``gunicorn scheduler_project.wsgi`` and ``manage.py rungrpc`` in processes of their own,
on free ports, on the test database and the session's Redis, with
``DJANGO_SETTINGS_MODULE=scheduler_project.settings.production`` (authentication on).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasks_app.grpc_api.generated import scheduler_pb2_grpc as pb_grpc
from tests.harness import ROOT, free_port

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def production_env(
    database_url: str, broker_url: str, workdir: Path, **settings: object
) -> dict[str, str]:
    """The environment of a production process; ``settings`` are SCHEDULER_* values."""
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SCHEDULER_", "CELERY_", "DJANGO_"))
        },
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "PYTHONPATH": str(ROOT),
        "SCHEDULER_PROCESSOR": "tests.processors:RecordingProcessor",
        "SCHEDULER_DATA_DIR": str(workdir / "data"),
        "LOG_LEVEL": "DEBUG",
    }
    env.update({f"SCHEDULER_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class ServerProcess:
    """A server process with its log, stopped by SIGTERM (then SIGKILL)."""

    name = "server"

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.log_path = workdir / f"{self.name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


class Gunicorn(ServerProcess):
    """``gunicorn scheduler_project.wsgi`` with the repository's gunicorn.conf.py."""

    name = "gunicorn"

    def __init__(self, env: dict[str, str], workdir: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [
                GUNICORN,
                "scheduler_project.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--threads",
                "4",
            ],
            env,
            workdir,
        )

    def wait_ready(self, timeout: float = 60) -> Gunicorn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"gunicorn not ready in {timeout} s:\n{self.log_tail()}")


class Rungrpc(ServerProcess):
    """``manage.py rungrpc``; with ``root_certificate``, the channel speaks TLS."""

    name = "rungrpc"

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        root_certificate: bytes | None = None,
        host_override: str | None = None,
    ) -> None:
        self.port = free_port()
        super().__init__(
            [
                sys.executable,
                "manage.py",
                "rungrpc",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--grace",
                "2",
                "--health-interval",
                "1",
            ],
            env,
            workdir,
        )
        target = f"127.0.0.1:{self.port}"
        if root_certificate is None:
            self.channel = grpc.insecure_channel(target)
        else:
            options = (
                [("grpc.ssl_target_name_override", host_override)]
                if host_override
                else []
            )
            self.channel = grpc.secure_channel(
                target,
                grpc.ssl_channel_credentials(root_certificates=root_certificate),
                options=options,
            )
        self.stub = pb_grpc.SchedulerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(self, timeout: float = 60) -> Rungrpc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                answer = self.health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"rungrpc not serving in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        self.channel.close()
        super().stop()
