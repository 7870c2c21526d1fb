"""Run an external program per request: request on stdin, result from stdout.

``SCHEDULER_COMMAND`` is the program and its arguments, split like a shell would but
never run by one. A non-zero exit is an error carrying the end of stderr.
"""

from __future__ import annotations

import shlex
import subprocess

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

STDERR_TAIL_BYTES = 2000


class CommandFailed(RuntimeError):
    """The command exited non-zero; its stderr says why."""


class CommandProcessor:
    def __init__(
        self, argv: list[str] | None = None, timeout_seconds: float | None = None
    ):
        if argv is None:
            argv = shlex.split(settings.SCHEDULER_COMMAND)
        if not argv:
            raise ImproperlyConfigured(
                "CommandProcessor needs SCHEDULER_COMMAND, the program to run"
            )
        self.argv = argv
        self.timeout_seconds = (
            timeout_seconds
            if timeout_seconds is not None
            else settings.SCHEDULER_TASK_TIME_LIMIT
        )

    def process(self, data: bytes) -> bytes:
        try:
            completed = subprocess.run(
                self.argv,
                input=data,
                capture_output=True,
                timeout=self.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandFailed(
                f"{self.argv[0]} ran longer than {self.timeout_seconds:g} s and was killed"
            ) from None
        except OSError as exc:
            raise CommandFailed(f"cannot run {self.argv[0]}: {exc}") from exc
        if completed.returncode != 0:
            tail = (
                completed.stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()
            )
            raise CommandFailed(
                f"{self.argv[0]} exited with status {completed.returncode}: {tail}"
            )
        return completed.stdout
