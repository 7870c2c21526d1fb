"""``?wait`` long polls against real gunicorn: they never take every thread of a process.

One gthread worker of 4 threads holds 3 waits at most. More concurrent waits than
threads must leave /healthz and /readyz answering within a second, answer the waits
over the bound at once with the task as it stands, and still hold the others only
until the task is done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
import urllib.request
import uuid as uuid_module
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from django.test import Client

from tasks_app.api import wait_bound
from tasks_app.interfaces import UUID, Task, TaskStatus
from tasks_app.storage import DjangoTaskStorage
from tests.harness import Cluster, WebServer

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4
HELD_WAITS = wait_bound.max_waits_for_threads(THREADS)
CLIENTS = 2 * THREADS
WAIT_SECONDS = 20
PROBE_TIMEOUT_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]
    at: float


def queued_task() -> Task:
    request = uuid_module.uuid4().bytes
    task = Task(
        uuid=UUID(str(uuid_module.uuid4())),
        hash=hashlib.sha256(request).hexdigest(),
        status=TaskStatus.QUEUED,
        request=request,
        result=None,
        error="",
        attempts=0,
        created_at=dt.datetime.now(dt.UTC),
        started_at=None,
        finished_at=None,
        request_size=len(request),
        result_size=None,
        worker="",
    )
    DjangoTaskStorage().store(task)
    return task


def finish(task: Task) -> None:
    """Mark the task done in the database, as a worker would have."""
    now = dt.datetime.now(dt.UTC)
    DjangoTaskStorage().store(
        dataclasses.replace(
            task,
            status=TaskStatus.DONE,
            result=b"done",
            result_size=4,
            attempts=1,
            started_at=now,
            finished_at=now,
        )
    )


def get(url: str, timeout: float) -> Answer:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return Answer(response.status, json.loads(response.read()), time.monotonic())


def assert_answers_in_time(url: str) -> None:
    started = time.monotonic()
    try:
        answer = get(url, PROBE_TIMEOUT_SECONDS)
    except OSError as exc:
        raise AssertionError(
            f"{url} did not answer within {PROBE_TIMEOUT_SECONDS:g} s: {exc}"
        ) from exc
    assert answer.status == 200, answer
    assert answer.at - started < PROBE_TIMEOUT_SECONDS


@pytest.fixture
def web(cluster: Cluster) -> Iterator[WebServer]:
    # No Celery worker: the task stays queued until the test finishes it.
    server = WebServer(cluster.env, cluster.workdir, workers=1, threads=THREADS)
    try:
        yield server.start()
    finally:
        server.stop()


def test_more_waits_than_threads_leave_the_probes_answering_and_the_rest_answer_at_once(
    web: WebServer,
) -> None:
    task = queued_task()
    wait_url = f"{web.url}/api/tasks/{task.uuid}?wait={WAIT_SECONDS}"

    with ThreadPoolExecutor(CLIENTS) as clients:
        started = time.monotonic()
        waits: list[Future[Answer]] = [
            clients.submit(get, wait_url, WAIT_SECONDS + 10) for _ in range(CLIENTS)
        ]
        # Long enough for every wait to reach the server and take its thread.
        time.sleep(1)

        for probe in ("/healthz", "/readyz"):
            assert_answers_in_time(web.url + probe)

        held_waits = [wait for wait in waits if not wait.done()]
        answered_at_once = [wait.result() for wait in waits if wait.done()]
        assert len(answered_at_once) == CLIENTS - HELD_WAITS
        for answer in answered_at_once:
            assert answer.status == 200
            assert answer.body["status"] == "queued"
            assert answer.body["uuid"] == task.uuid
            assert answer.at - started < 1
        with urllib.request.urlopen(f"{web.url}/metrics", timeout=5) as metrics:
            assert (
                f"scheduler_http_waits_cut_short_total {CLIENTS - HELD_WAITS:.1f}"
                in metrics.read().decode()
            )

        finished_at = time.monotonic()
        finish(task)
        held = [wait.result() for wait in held_waits]

    assert len(held) == HELD_WAITS
    for answer in held:
        assert answer.status == 200
        assert answer.body["status"] == "done"
        # The poll interval grows to half a second: the held waits see "done" within it.
        assert answer.at - finished_at < 2


def test_a_process_that_allows_no_wait_answers_at_once(client: Client) -> None:
    task = queued_task()
    wait_bound.set_bound(0)
    try:
        started = time.monotonic()
        response = client.get(f"/api/tasks/{task.uuid}?wait=10")
        elapsed = time.monotonic() - started
    finally:
        wait_bound.set_bound(None)
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert elapsed < 1


@pytest.mark.parametrize(
    ("threads", "held_waits"), [(1, 0), (2, 1), (4, 3), (8, 6), (16, 12)]
)
def test_a_quarter_of_the_threads_at_least_one_never_holds_a_wait(
    threads: int, held_waits: int
) -> None:
    assert wait_bound.max_waits_for_threads(threads) == held_waits
