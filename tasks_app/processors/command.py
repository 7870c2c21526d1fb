"""Run an external program per request: request on stdin, result from stdout.

``SCHEDULER_COMMAND`` is the program and its arguments, split like a shell would but
never run by one; the request cannot add arguments. Each call runs sandboxed:

- its environment holds only the variables of ``SCHEDULER_COMMAND_ENV_ALLOW``;
- its working directory is a fresh temporary one, removed afterwards;
- ``SCHEDULER_COMMAND_CPU_SECONDS`` and ``SCHEDULER_COMMAND_MEMORY_BYTES`` cap its CPU
  time and address space (``setrlimit`` before the program starts);
- it runs in a session of its own, so a timeout kills whatever it started too, and
  dies with its parent: when the lease keeper kills a pool process past the time
  limit, its command goes too (Linux's ``PR_SET_PDEATHSIG``);
- stdout goes to a temporary file, and a result over ``SCHEDULER_MAX_RESULT_BYTES``
  fails the call without being read into the worker's memory.

A non-zero exit, or a signal, is an error carrying the end of stderr. This is resource
hygiene, not isolation: the program still runs as the worker's user, sees its files
and its network. A hostile program wants a container or a user of its own.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress
from typing import IO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

STDERR_TAIL_BYTES = 2000
# prctl(2): the signal a process gets when the thread that forked it dies.
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class CommandFailed(RuntimeError):
    """The command failed (exit status, signal, a limit); the message says which."""


class CommandProcessor:
    def __init__(
        self,
        argv: list[str] | None = None,
        timeout_seconds: float | None = None,
        *,
        env_allow: list[str] | None = None,
        cpu_seconds: int | None = None,
        memory_bytes: int | None = None,
        max_output_bytes: int | None = None,
    ):
        if argv is None:
            argv = shlex.split(settings.SCHEDULER_COMMAND)
        if not argv:
            raise ImproperlyConfigured(
                "CommandProcessor needs SCHEDULER_COMMAND, the program to run"
            )
        self.argv = list(argv)
        self.timeout_seconds = (
            timeout_seconds
            if timeout_seconds is not None
            else settings.SCHEDULER_TASK_TIME_LIMIT
        )
        self.env_allow = list(
            env_allow if env_allow is not None else settings.SCHEDULER_COMMAND_ENV_ALLOW
        )
        self.cpu_seconds = (
            cpu_seconds
            if cpu_seconds is not None
            else settings.SCHEDULER_COMMAND_CPU_SECONDS
        )
        self.memory_bytes = (
            memory_bytes
            if memory_bytes is not None
            else settings.SCHEDULER_COMMAND_MEMORY_BYTES
        )
        self.max_output_bytes = (
            max_output_bytes
            if max_output_bytes is not None
            else settings.SCHEDULER_MAX_RESULT_BYTES
        )

    @property
    def program(self) -> str:
        return self.argv[0]

    def environment(self) -> dict[str, str]:
        """The command's whole environment: the allowed variables the worker has."""
        return {name: os.environ[name] for name in self.env_allow if name in os.environ}

    def process(self, data: bytes) -> bytes:
        with (
            tempfile.TemporaryDirectory(prefix="scheduler-command-") as workdir,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
        ):
            returncode = self._run(data, workdir, stdout, stderr)
            if returncode != 0:
                raise CommandFailed(self._failure(returncode, stderr))
            size = stdout.seek(0, os.SEEK_END)
            if size > self.max_output_bytes:
                raise CommandFailed(
                    f"{self.program} wrote {size} bytes, over the limit of "
                    f"{self.max_output_bytes} bytes (SCHEDULER_MAX_RESULT_BYTES)"
                )
            stdout.seek(0)
            return stdout.read()

    def _run(
        self, data: bytes, workdir: str, stdout: IO[bytes], stderr: IO[bytes]
    ) -> int:
        parent_pid = os.getpid()

        def in_the_child() -> None:
            self._die_with(parent_pid)
            self._limit_resources()

        try:
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                cwd=workdir,
                env=self.environment(),
                # Between fork and exec, in the child: only system calls, which is
                # what is safe there.
                preexec_fn=in_the_child,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandFailed(f"cannot run {self.program}: {exc}") from exc
        try:
            process.communicate(data, timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            raise CommandFailed(
                f"{self.program} ran longer than {self.timeout_seconds:g} s and was killed"
            ) from None
        finally:
            # Not yet reaped on a timeout or an interruption, so its process group
            # is still its own to kill, with whatever it started.
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    @staticmethod
    def _die_with(parent_pid: int) -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    def _limit_resources(self) -> None:
        if self.cpu_seconds > 0:
            # SIGXCPU at the soft limit, which says why; SIGKILL a second later.
            resource.setrlimit(
                resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1)
            )
        if self.memory_bytes > 0:
            resource.setrlimit(
                resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes)
            )

    def _failure(self, returncode: int, stderr: IO[bytes]) -> str:
        size = stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, size - STDERR_TAIL_BYTES))
        tail = stderr.read().decode("utf-8", "replace").strip()
        if returncode < 0:
            name = _signal_name(-returncode)
            if -returncode == signal.SIGXCPU:
                return "; ".join(
                    part
                    for part in (
                        f"{self.program} used its {self.cpu_seconds} s of CPU time "
                        "(SCHEDULER_COMMAND_CPU_SECONDS) and was stopped by SIGXCPU",
                        tail,
                    )
                    if part
                )
            else:
                what = f"{self.program} was killed by {name}"
        else:
            what = f"{self.program} exited with status {returncode}"
        return "; ".join(part for part in (what, self._limits_note(), tail) if part)

    def _limits_note(self) -> str:
        """The limits in force, since running out of them is one way a command fails."""
        limits = []
        if self.memory_bytes > 0:
            limits.append(
                f"address space {self.memory_bytes} bytes "
                "(SCHEDULER_COMMAND_MEMORY_BYTES)"
            )
        if self.cpu_seconds > 0:
            limits.append(f"CPU {self.cpu_seconds} s (SCHEDULER_COMMAND_CPU_SECONDS)")
        return f"limits: {', '.join(limits)}" if limits else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
