"""CommandProcessor's sandbox: fixed argv, allowed environment, fresh directory, limits.

The commands are real programs (``env``, ``sh``, this Python); the last test runs one
through a real worker, as SCHEDULER_PROCESSOR would in a deployment.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tasks_app.interfaces import TaskStatus
from tasks_app.processors import CommandProcessor
from tasks_app.processors.command import CommandFailed
from tests.harness import ROOT, Cluster, wait_until

PYTHON = sys.executable
MiB = 1024 * 1024


def python(code: str, **options: Any) -> CommandProcessor:
    return CommandProcessor([PYTHON, "-c", code], **options)


def test_the_request_is_stdin_and_never_an_argument_or_a_shell_word() -> None:
    hostile = b"$(touch /tmp/pwned); `id`; rm -rf ~ && echo $HOME"

    assert CommandProcessor(["cat"]).process(hostile) == hostile
    assert (
        CommandProcessor(["echo", "$HOME", ";", "id"]).process(b"") == b"$HOME ; id\n"
    )


def test_the_command_sees_only_the_allowed_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "not for the command")
    monkeypatch.setenv("LANG", "C.UTF-8")

    output = CommandProcessor(["env"]).process(b"").decode()

    names = {line.split("=", 1)[0] for line in output.splitlines()}
    assert names <= {"PATH", "LANG"}
    assert "LANG=C.UTF-8" in output.splitlines()
    assert "secret" not in output


def test_the_allow_list_comes_from_the_setting(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SCHEDULER_COMMAND_ENV_ALLOW = ["PATH", "MODEL_DIR"]
    monkeypatch.setenv("MODEL_DIR", "/opt/models")
    monkeypatch.setenv("LANG", "C.UTF-8")

    output = CommandProcessor(["env"]).process(b"").decode().splitlines()

    assert "MODEL_DIR=/opt/models" in output
    assert not any(line.startswith("LANG=") for line in output)


def test_each_call_runs_in_a_fresh_directory_that_is_removed_afterwards() -> None:
    processor = CommandProcessor(
        ["sh", "-c", "pwd; ls -A | wc -l; echo data > left-behind; mkdir -p sub"]
    )

    first = processor.process(b"").decode().split()
    second = processor.process(b"").decode().split()

    assert first[0] != second[0]
    assert first[1] == second[1] == "0"  # empty when the command starts
    for directory in (first[0], second[0]):
        assert Path(directory).name.startswith("scheduler-command-")
        assert not Path(directory).exists()


def test_a_command_over_its_memory_limit_fails_saying_so() -> None:
    processor = python("bytearray(1024 * 1024 * 1024)", memory_bytes=300 * MiB)

    with pytest.raises(CommandFailed) as failed:
        processor.process(b"")

    message = str(failed.value)
    assert "MemoryError" in message
    assert (
        f"address space {300 * MiB} bytes (SCHEDULER_COMMAND_MEMORY_BYTES)" in message
    )


def test_a_command_over_its_cpu_limit_is_stopped_saying_so() -> None:
    processor = python("while True: pass", cpu_seconds=1, timeout_seconds=30)

    started = time.monotonic()
    with pytest.raises(CommandFailed) as failed:
        processor.process(b"")

    # One CPU second, however busy the machine: well before the 30 s timeout.
    assert time.monotonic() - started < 20
    message = str(failed.value)
    assert "1 s of CPU time (SCHEDULER_COMMAND_CPU_SECONDS)" in message
    assert "SIGXCPU" in message


def test_the_limits_are_read_from_the_settings(settings: Any) -> None:
    settings.SCHEDULER_COMMAND_MEMORY_BYTES = 300 * MiB
    settings.SCHEDULER_COMMAND_CPU_SECONDS = 5
    settings.SCHEDULER_MAX_RESULT_BYTES = 1234

    processor = CommandProcessor(["cat"])

    assert (processor.memory_bytes, processor.cpu_seconds) == (300 * MiB, 5)
    assert processor.max_output_bytes == 1234
    assert processor.env_allow == ["PATH", "LANG"]


def test_a_timeout_kills_what_the_command_started_too() -> None:
    marker = "37.0123"
    processor = CommandProcessor(
        ["sh", "-c", f"sleep {marker} & sleep {marker}; wait"], timeout_seconds=1
    )

    with pytest.raises(CommandFailed, match="longer than 1 s"):
        processor.process(b"")

    wait_until(
        lambda: not processes_running(["sleep", marker]),
        5,
        message="the command's children to die",
    )


def processes_running(argv: list[str]) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == argv:
            found.append(process)
    return found


def test_the_command_dies_with_the_process_that_ran_it() -> None:
    """As when the lease keeper kills a pool process that is past its time limit."""
    marker = ["sleep", "41.0321"]
    runner = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "from tasks_app.processors.command import CommandProcessor as C; "
            f"C({marker!r}, 600, env_allow=['PATH'], cpu_seconds=0, memory_bytes=0, "
            "max_output_bytes=10).process(b'')",
        ],
        cwd=ROOT,
    )
    wait_until(lambda: processes_running(marker), 20, message="the command to start")

    runner.kill()
    runner.wait(10)

    wait_until(lambda: not processes_running(marker), 10, message="the command to die")


def test_output_over_the_result_limit_fails_without_being_read() -> None:
    processor = CommandProcessor(
        ["head", "-c", "5000", "/dev/zero"], max_output_bytes=1000
    )

    with pytest.raises(CommandFailed) as failed:
        processor.process(b"")

    assert (
        "5000 bytes, over the limit of 1000 bytes (SCHEDULER_MAX_RESULT_BYTES)"
        in str(failed.value)
    )


def test_a_failing_command_reports_its_status_and_the_end_of_stderr() -> None:
    processor = python(
        "import sys; sys.stderr.write('x' * 5000 + 'the reason'); sys.exit(3)"
    )

    with pytest.raises(CommandFailed) as failed:
        processor.process(b"")

    message = str(failed.value)
    assert "exited with status 3" in message
    assert message.endswith("the reason")
    assert len(message) < 2200


def test_a_missing_program_is_a_clear_failure() -> None:
    with pytest.raises(CommandFailed, match="cannot run /no/such/program"):
        CommandProcessor(["/no/such/program"]).process(b"")


# --- through a worker ---------------------------------------------------------------------


def test_a_worker_records_a_command_over_its_memory_limit_as_an_error(
    cluster: Cluster, scheduler: Any
) -> None:
    # Allocates as many MiB as the request says and echoes the request back.
    program = (
        "import sys; data = sys.stdin.buffer.read(); "
        "block = bytearray(int(data) * 1024 * 1024); sys.stdout.buffer.write(data)"
    )
    cluster.configure(
        scheduler_processor="tasks_app.processors:CommandProcessor",
        scheduler_command=shlex.join([PYTHON, "-c", program]),
        scheduler_command_memory_bytes=300 * MiB,
    )
    cluster.start_worker(concurrency=1)

    small = scheduler.add_task(b"10")
    large = scheduler.add_task(b"1024")

    def finished(uuid: str) -> bool:
        return scheduler.get_task(uuid).status.is_finished

    for uuid in (small, large):
        wait_until(lambda u=uuid: finished(u), 60, message=f"task {uuid} to finish")
    assert scheduler.get_task(small).status == TaskStatus.DONE
    assert scheduler.storage.get_result(small) == (TaskStatus.DONE, b"10")
    failed = scheduler.get_task(large)
    assert failed.status == TaskStatus.ERROR
    assert "MemoryError" in failed.error
    assert "SCHEDULER_COMMAND_MEMORY_BYTES" in failed.error


def test_a_command_past_the_time_limit_does_not_outlive_its_task(
    cluster: Cluster, scheduler: Any
) -> None:
    marker = ["sleep", "43.0321"]
    cluster.configure(
        scheduler_processor="tasks_app.processors:CommandProcessor",
        scheduler_command=shlex.join(marker),
        scheduler_task_time_limit=2,
    )
    cluster.start_worker(concurrency=1)

    uuid = scheduler.add_task(b"any request")

    wait_until(
        lambda: scheduler.get_task(uuid).status.is_finished, 30, message="time limit"
    )
    assert scheduler.get_task(uuid).status == TaskStatus.ERROR
    wait_until(lambda: not processes_running(marker), 10, message="the command to die")
