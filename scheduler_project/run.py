"""``make run``: every process of the platform in the foreground, supervised by honcho.

Starts web (gunicorn), gRPC, a Celery worker and, when the broker has fanout, Flower,
each with this process's environment. Ctrl-C or SIGTERM stops them all: SIGTERM goes to
each process's main pid, and whatever is still running after RUN_STOP_GRACE_SECONDS
(default 75) is killed with its process group. If any process exits, the others are
stopped too. The exit code is 130 after Ctrl-C, 143 after SIGTERM, and otherwise that
of the first process to exit.

Ports: WEB_PORT (else PORT, else 8000), SCHEDULER_GRPC_PORT (50051), FLOWER_PORT (5555),
SCHEDULER_METRICS_PORT (9808) for the worker's metrics and GRPC_METRICS_PORT (9809) for the
gRPC server's. Web and the worker each keep their prometheus-client multiprocess files in
a folder of their own under the data folder, so that neither reports the other's counts;
the gRPC server is one process and counts in memory.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from honcho.manager import Manager

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_STOP_GRACE_SECONDS = 75.0
DEFAULT_WORKER_METRICS_PORT = "9808"
DEFAULT_GRPC_METRICS_PORT = "9809"
METRICS_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One supervised process: its name in the output, its program, its own variables."""

    name: str
    argv: list[str]
    env: Mapping[str, str]

    @property
    def command(self) -> str:
        # honcho runs a command through the shell; ``exec`` makes the program itself
        # the pid that honcho knows, so the SIGTERM reaches it and not a shell.
        return "exec " + shlex.join(self.argv)


def broker_has_fanout(broker_url: str) -> bool:
    """Whether kombu's transport for this URL broadcasts (Flower and inspect need it)."""
    from kombu.transport import resolve_transport
    from kombu.utils.imports import symbol_by_name

    scheme = broker_url.split("://", 1)[0].split("+", 1)[0]
    path = resolve_transport(scheme)
    if path is None:
        raise ValueError(f"CELERY_BROKER_URL {broker_url!r} names no kombu transport")
    transport = symbol_by_name(path)
    return "fanout" in transport.implements.exchange_type


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What every process gets: this environment, with the project importable."""
    env = dict(environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    paths = [str(BASE_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def process_specs(
    env: Mapping[str, str], *, data_dir: Path, broker_url: str
) -> list[ProcessSpec]:
    """The processes of the contract's table, as ``make run`` starts them."""
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "scheduler_project"]
    web_port = env.get("WEB_PORT") or env.get("PORT") or "8000"
    heartbeat = env.get("SCHEDULER_WORKER_HEARTBEAT_FILE") or str(
        data_dir / "worker.heartbeat"
    )
    # Only web and the worker have several processes that count into a folder.
    plain = {k: v for k, v in env.items() if k != METRICS_FOLDER_VARIABLE}
    metrics = data_dir / "metrics"
    specs = [
        ProcessSpec(
            "web",
            [python, "-m", "gunicorn", "scheduler_project.wsgi"],
            {**plain, "PORT": web_port, METRICS_FOLDER_VARIABLE: str(metrics / "web")},
        ),
        ProcessSpec(
            "grpc",
            [python, "manage.py", "rungrpc"],
            {
                **plain,
                "SCHEDULER_METRICS_PORT": env.get(
                    "GRPC_METRICS_PORT", DEFAULT_GRPC_METRICS_PORT
                ),
            },
        ),
        ProcessSpec(
            "worker",
            [*celery, "worker", "--loglevel", "INFO"],
            {
                **plain,
                "SCHEDULER_WORKER_HEARTBEAT_FILE": heartbeat,
                "SCHEDULER_METRICS_PORT": env.get(
                    "SCHEDULER_METRICS_PORT", DEFAULT_WORKER_METRICS_PORT
                ),
                METRICS_FOLDER_VARIABLE: str(metrics / "worker"),
            },
        ),
    ]
    if broker_has_fanout(broker_url):
        flower_port = env.get("FLOWER_PORT", "5555")
        specs.append(
            ProcessSpec("flower", [*celery, "flower", f"--port={flower_port}"], plain)
        )
    return specs


class MainPidSignals:
    """honcho's process manager, but SIGTERM goes to the main pid, not its group.

    honcho signals each process group; a Celery worker's prefork children reset SIGTERM
    to its default, so a group-wide SIGTERM kills the running tasks instead of letting
    the main process drain them. SIGKILL, the last resort, still takes the whole group.
    """

    def terminate(self, pid: int) -> None:
        self._send(pid, signal.SIGTERM, group=False)

    def kill(self, pid: int) -> None:
        self._send(pid, signal.SIGKILL, group=True)

    @staticmethod
    def _send(pid: int, signum: signal.Signals, *, group: bool) -> None:
        try:
            if group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise


class Supervisor(Manager):
    """honcho's manager with a grace period long enough for a drain.

    honcho kills whatever still runs five seconds after the stop; a worker finishing its
    tasks, or a web process finishing a long poll, needs longer, so ``kill`` waits until
    ``grace_seconds`` have passed since the first stop.
    """

    def __init__(self, grace_seconds: float) -> None:
        super().__init__()
        # honcho has no public way to choose how processes are signalled; this
        # attribute and ``_system_print`` are why requirements.txt keeps honcho below
        # its next major version.
        self._procmgr = MainPidSignals()
        self.grace_seconds = grace_seconds
        self._stop_started: float | None = None
        self._killed = False

    def terminate(self) -> None:
        # Called on SIGINT or SIGTERM, and again by honcho once any process has exited.
        if self._stop_started is None:
            self._stop_started = time.monotonic()
        super().terminate()

    def kill(self) -> None:
        started = self._stop_started or time.monotonic()
        if self._killed or time.monotonic() - started < self.grace_seconds:
            return
        self._killed = True
        self._system_print(
            f"still running {self.grace_seconds:g} s after the stop: killing\n"
        )
        super().kill()


def main() -> int:
    env = base_environment(os.environ)
    # The supervisor reads the settings the processes will read (the data folder, the
    # broker and their defaults) from the same environment.
    os.environ.update(env)
    from django.conf import settings

    specs = process_specs(
        env, data_dir=Path(settings.DATA_DIR), broker_url=settings.CELERY_BROKER_URL
    )
    grace = float(env.get("RUN_STOP_GRACE_SECONDS", DEFAULT_STOP_GRACE_SECONDS))
    supervisor = Supervisor(grace_seconds=grace)
    for spec in specs:
        supervisor.add_process(
            spec.name, spec.command, env=dict(spec.env), cwd=str(BASE_DIR)
        )
    supervisor.loop()
    return int(supervisor.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
