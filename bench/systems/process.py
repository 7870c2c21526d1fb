"""A worker process of a baseline, in a process group of its own, logging to a file."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import psutil

from tests.harness import ROOT


class Daemon:
    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the process and all its descendants."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            with suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the main process (a warm shutdown), then SIGKILL to the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def base_env(**extra: str) -> dict[str, str]:
    """This environment without our own settings, with the project on PYTHONPATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SCHEDULER_", "CELERY_", "BENCH_", "DJANGO_"))
        and key != "DATABASE_URL"
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env
