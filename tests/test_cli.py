"""The management commands as a user runs them: ``python manage.py ...`` in a process of
its own, against the test database and real workers, judged by exit code and output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks_app.models import TaskRecord
from tasks_app.processors import ThumbnailProcessor
from tasks_app.scheduler import Scheduler
from tests.harness import ROOT, Cluster, task_request, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ICONS = Path("/usr/share/icons/Adwaita/48x48/legacy")
THUMBNAILS = "tasks_app.processors:ThumbnailProcessor"


def manage(
    cluster: Cluster, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def task_snapshot() -> dict[str, tuple[str, int, object, object]]:
    """Each task's status and processing starts: a processor call changes both."""
    return {
        str(row.uuid): (row.status, row.attempts, row.started_at, row.finished_at)
        for row in TaskRecord.objects.defer("request", "result")
    }


# --- submit -----------------------------------------------------------------------------


def test_submit_thumbnails_a_folder_of_icons_and_a_second_run_calls_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    files = sorted(p for p in ICONS.rglob("*") if p.is_file())
    assert len(files) >= 100, f"expected the Adwaita icons under {ICONS}"
    unique = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    cluster.configure(scheduler_processor=THUMBNAILS)
    cluster.start_worker(concurrency=2)

    first = manage(
        cluster, "submit", str(ICONS), "--out", str(tmp_path / "first"), "--wait", "600"
    )

    assert first.returncode == 0, first.stderr + cluster.logs()
    assert f"{len(files)} files: {len(unique)} new tasks" in first.stdout
    assert first.stdout.count("deduplicated: ") == len(files) - len(unique)
    assert first.stderr.count(": queued (") == len(unique)
    assert f"{len(unique)} done, 0 in error, 0 unfinished, 0 refused" in first.stdout
    processor = ThumbnailProcessor()
    for path in files:
        written = (tmp_path / "first" / path.relative_to(ICONS)).read_bytes()
        assert written == processor.process(path.read_bytes()), path
    tasks = task_snapshot()
    assert len(tasks) == len(unique)
    assert {(status, attempts) for status, attempts, _, _ in tasks.values()} == {
        ("done", 1)
    }

    second = manage(
        cluster, "submit", str(ICONS), "--out", str(tmp_path / "second"), "--wait", "60"
    )

    assert second.returncode == 0, second.stderr
    assert (
        f"{len(files)} files: 0 new tasks, {len(files)} deduplicated" in second.stdout
    )
    for path in files:
        relative = path.relative_to(ICONS)
        assert (tmp_path / "second" / relative).read_bytes() == (
            tmp_path / "first" / relative
        ).read_bytes()
    # Nothing was admitted, so nothing was published: no "queued" line was logged.
    assert ": queued (" not in second.stderr
    time.sleep(2)  # a stray message would have started a task within this
    assert task_snapshot() == tasks


def test_submit_exits_1_when_a_task_ends_in_error_and_writes_the_others(
    cluster: Cluster, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.txt").write_bytes(b"this is not an image")
    icon = next(p for p in sorted(ICONS.iterdir()) if p.suffix == ".png")
    (inputs / "sub").mkdir()
    (inputs / "sub" / icon.name).write_bytes(icon.read_bytes())
    cluster.configure(scheduler_processor=THUMBNAILS)
    cluster.start_worker(concurrency=1)

    run = manage(
        cluster, "submit", str(inputs), "--out", str(tmp_path / "out"), "--wait", "120"
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert f"error: {inputs / 'notes.txt'}" in run.stderr
    assert "not an image" in run.stderr
    assert "1 done, 1 in error" in run.stderr
    assert (tmp_path / "out" / "sub" / icon.name).read_bytes() == (
        ThumbnailProcessor().process(icon.read_bytes())
    )
    assert not (tmp_path / "out" / "notes.txt").exists()


def test_submit_exits_2_when_the_scheduler_is_closed(
    cluster: Cluster, scheduler: Scheduler, tmp_path: Path
) -> None:
    (tmp_path / "a.bin").write_bytes(task_request(id="refused"))
    scheduler.close()

    run = manage(cluster, "submit", str(tmp_path / "a.bin"))

    assert run.returncode == 2, run.stdout + run.stderr
    assert "refused: " in run.stderr and "closed" in run.stderr
    assert TaskRecord.objects.count() == 0


def test_submit_exits_2_for_a_request_over_the_size_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 11)
    cluster.configure(scheduler_max_request_bytes=10)
    run = manage(cluster, "submit", str(tmp_path / "big.bin"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "SCHEDULER_MAX_REQUEST_BYTES" in run.stderr
    assert TaskRecord.objects.count() == 0


def test_submit_without_a_worker_and_wait_0_exits_1_unfinished(
    cluster: Cluster, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.bin").write_bytes(task_request(id="nobody runs me"))
    run = manage(cluster, "submit", str(inputs), "--wait", "0")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"unfinished: {inputs / 'a.bin'}" in run.stderr
    assert TaskRecord.objects.get().status == "queued"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["/no/such/path"],
        ["{empty}"],
        ["{a}", "--wait", "-1"],
        ["{a}", "--wait", "soon"],
        ["{a}", "--wait", "nan"],
        ["/dev/null"],
        ["{a}", "--out", "{a}/x.bin"],
        ["{a}", "{b}", "--out", "{out}"],
    ],
)
def test_submit_bad_usage_exits_2_and_submits_nothing(
    cluster: Cluster, tmp_path: Path, args: list[str]
) -> None:
    for name in ("a", "b", "empty"):
        (tmp_path / name).mkdir()
    # The same name in two folders: both would write DIR/x.bin.
    (tmp_path / "a" / "x.bin").write_bytes(b"one")
    (tmp_path / "b" / "x.bin").write_bytes(b"two")
    folders = {name: str(tmp_path / name) for name in ("a", "b", "empty", "out")}

    run = manage(cluster, "submit", *(arg.format(**folders) for arg in args))

    assert run.returncode == 2, run.stdout + run.stderr
    assert TaskRecord.objects.count() == 0


# --- close, open, status ----------------------------------------------------------------


def test_status_close_and_open_report_the_state(cluster: Cluster) -> None:
    status = manage(cluster, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {
        "state": "accepting",
        "closed": False,
        "queued": 0,
        "processing": 0,
        "num_workers": 2,
        "queue_size": 1000,
    }

    closed = manage(cluster, "close")
    assert closed.returncode == 0, closed.stderr
    assert "closed: True" in closed.stdout
    assert json.loads(manage(cluster, "status", "--json").stdout)["state"] == "drained"

    opened = manage(cluster, "open")
    assert opened.returncode == 0
    assert "state: accepting" in opened.stdout
    assert "closed: False" in manage(cluster, "status").stdout


@pytest.mark.parametrize("wait", ["nan", "-1", "soon"])
def test_close_with_a_bad_wait_exits_2_and_leaves_the_scheduler_open(
    cluster: Cluster, scheduler: Scheduler, wait: str
) -> None:
    run = manage(cluster, "close", "--wait", wait)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--wait" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert scheduler.state().closed is False


def test_submit_names_a_path_that_is_no_file_for_what_it_is(
    cluster: Cluster,
) -> None:
    run = manage(cluster, "submit", "/dev/null")
    assert run.returncode == 2
    assert "/dev/null: not a regular file or a folder" in run.stderr, run.stderr


def test_close_wait_exits_1_when_tasks_are_left(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    scheduler.add_task(task_request(id="left queued"))
    started = time.monotonic()
    run = manage(cluster, "close", "--wait", "1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "not drained after 1 s: 1 queued" in run.stderr
    assert time.monotonic() - started >= 1
    assert scheduler.state().closed is True


def test_close_wait_exits_0_once_a_worker_drains_the_queue(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    uuid = scheduler.add_task(task_request(id="drain me", sleep=1))
    cluster.start_worker(concurrency=1)

    run = manage(cluster, "close", "--wait", "60")

    assert run.returncode == 0, run.stdout + run.stderr + cluster.logs()
    assert "state: drained" in run.stdout
    assert scheduler.get_task(uuid).status == "done"
    wait_until(lambda: scheduler.state().state == "drained", 5, message="drained")
