"""The log lines of one task's life: one INFO line per change, each with its UUID.

The queued line comes from the admitting process (this one), processing and done from
a real worker's pool process; in JSON they carry task_uuid, event, worker and the
processor's time as fields. No line carries the request's or the result's bytes.
"""

from __future__ import annotations

import json
import logging
import uuid as uuid_module
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from pythonjsonlogger.json import JsonFormatter

from tasks_app.scheduler import Scheduler, get_scheduler
from tests.harness import Cluster, task_request, wait_until

# Marks the request: it shows in a log line only if the bytes were logged.
MARKER = "request-bytes-never-logged"


class Recorder(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@contextmanager
def recording(formatter: logging.Formatter | None = None) -> Iterator[Recorder]:
    logger = logging.getLogger("tasks_app")
    recorder = Recorder(formatter)
    level = logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


def json_formatter() -> JsonFormatter:
    """The formatter LOG_FORMAT=json configures, built from the same settings."""
    options: dict[str, Any] = dict(settings.LOGGING["formatters"]["json"])
    options.pop("()")
    return JsonFormatter(**options)


def run_one_task(cluster: Cluster, **spec: object) -> str:
    get_scheduler.cache_clear()
    uuid = str(get_scheduler().add_task(task_request(marker=MARKER, **spec)))
    wait_until(
        lambda: get_scheduler().get_task(uuid).status in ("done", "error"),
        30,
        message=f"task {uuid} to finish\n{cluster.logs()}",
    )
    return uuid


def worker_lines(cluster: Cluster) -> list[str]:
    # The done line is written just after the row: wait for the log to catch up.
    return cluster.workers[0].log_path.read_text().splitlines()


def test_a_tasks_info_lines_say_queued_processing_done_with_its_uuid(
    cluster: Cluster,
) -> None:
    cluster.start_worker(concurrency=1)
    with recording() as admitted:
        uuid = run_one_task(cluster, sleep=0.2)

    (queued,) = [r for r in admitted.records if getattr(r, "task_uuid", "") == uuid]
    assert queued.levelno == logging.INFO
    assert queued.getMessage().startswith(f"task {uuid}: queued")

    wait_until(
        lambda: any(f"{uuid}: done" in line for line in worker_lines(cluster)), 5
    )
    mine = [line for line in worker_lines(cluster) if uuid in line]
    info = [line for line in mine if " INFO tasks_app." in line]
    processing = [line for line in info if f"task {uuid}: processing" in line]
    done = [line for line in info if f"task {uuid}: done" in line]
    assert len(processing) == 1 and len(done) == 1, mine
    assert info.index(processing[0]) < info.index(done[0])
    assert "on w1@" in processing[0]
    assert "attempt 1 on w1@" in done[0]
    seconds = float(done[0].rsplit(", ", 1)[1].split(" s)")[0])
    assert 0.2 <= seconds < 5
    for line in [*admitted.lines, *worker_lines(cluster)]:
        assert MARKER not in line


def test_json_lines_parse_and_carry_uuid_event_worker_and_duration(
    cluster: Cluster,
) -> None:
    cluster.configure(log_format="json")
    cluster.start_worker(concurrency=1)
    with recording(json_formatter()) as admitted:
        uuid = run_one_task(cluster, fail="broken on purpose")

    queued = [json.loads(line) for line in admitted.lines]
    assert {"task_uuid": uuid, "event": "queued", "level": "INFO"}.items() <= (
        queued[-1].items()
    )

    def events() -> list[dict[str, Any]]:
        # Celery's own lines keep its text format; ours are the JSON objects.
        parsed = [
            json.loads(line) for line in worker_lines(cluster) if line.startswith("{")
        ]
        return [fields for fields in parsed if fields.get("task_uuid") == uuid]

    wait_until(lambda: any(e["event"] == "error" for e in events()), 5)
    by_event = {fields["event"]: fields for fields in events()}
    assert by_event["processing"]["level"] == "INFO"
    assert by_event["processing"]["worker"].startswith("w1@")
    error = by_event["error"]
    assert error["level"] == "INFO"  # the task's failure, not the platform's
    assert error["worker"].startswith("w1@")
    assert error["attempt"] == 1
    assert 0 <= error["duration_seconds"] < 5
    assert "broken on purpose" in error["message"]
    for fields in events():
        assert {"time", "level", "logger", "message"} <= fields.keys()
        assert MARKER not in json.dumps(fields)


@pytest.mark.django_db
def test_the_apis_refusals_leave_djangos_request_log_and_a_500_stays(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed scheduler's 503 per submission was an ERROR line each, a 404 a WARNING."""
    recorder = Recorder()
    django_request = logging.getLogger("django.request")
    django_request.addHandler(recorder)
    try:
        get_scheduler.cache_clear()
        get_scheduler().close()
        refused = client.post(
            "/api/tasks", b"refused", content_type="application/octet-stream"
        )
        assert refused.status_code == 503
        assert client.get(f"/api/tasks/{uuid_module.uuid4()}").status_code == 404
        assert client.get("/api/tasks/not-a-uuid").status_code == 400
        assert recorder.records == []

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(Scheduler, "get_task", broken)
        assert client.get(f"/api/tasks/{uuid_module.uuid4()}").status_code == 500
        [error] = recorder.records
        assert error.levelno == logging.ERROR
    finally:
        django_request.removeHandler(recorder)
        get_scheduler.cache_clear()
