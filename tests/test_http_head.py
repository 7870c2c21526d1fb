"""HEAD on every GET route, as gunicorn and Django's runserver answer it on the wire.

A HEAD must answer what its GET would, status and headers alike (Content-Length the
length of the GET's body), need the same token, and carry no body: read off the raw
socket, where a body byte left behind would be taken as the start of the next answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks_app.interfaces import UUID, Task, TaskStatus
from tasks_app.storage import DjangoTaskStorage
from tasks_app.tokens import Scope, create_token
from tests.harness import RedisServer
from tests.live_servers import Gunicorn, production_env
from tests.raw_http import RawAnswer, exchange, request_head

pytestmark = pytest.mark.django_db(transaction=True)

NO_SUCH_TASK = "0b7e6f55-9c3b-4c39-9d43-2a0f1d1b7c11"
# Behind the ingress: the production settings redirect plain HTTP.
FROM_THE_INGRESS = {"X-Forwarded-Proto": "https"}
# Headers that may differ between two answers to the same request.
OF_THE_MOMENT = frozenset({"date"})


@pytest.fixture(scope="module")
def web(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    workdir: Path = tmp_path_factory.mktemp("head")
    env = production_env(live_database_url, redis_server.url, workdir, rate_limit="off")
    server = Gunicorn(env, workdir, workers=1)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def reader() -> dict[str, str]:
    token = create_token([Scope.READ], name="head")[1]
    return {"Authorization": f"Bearer {token}", **FROM_THE_INGRESS}


def stored_task(status: TaskStatus, result: bytes | None = None) -> Task:
    request = uuid_module.uuid4().bytes
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    task = Task(
        uuid=UUID(str(uuid_module.uuid4())),
        hash=hashlib.sha256(request).hexdigest(),
        status=status,
        request=request,
        result=result,
        error="",
        attempts=1,
        created_at=at,
        started_at=at,
        finished_at=at if status.is_finished else None,
        request_size=len(request),
        result_size=len(result) if result is not None else None,
        worker="w1",
    )
    DjangoTaskStorage().store(task)
    return task


def get_then_head(port: int, path: str, headers: dict[str, str]) -> tuple[Any, Any]:
    get = exchange(port, request_head("GET", path, headers))
    head = exchange(port, request_head("HEAD", path, headers))
    return get, head


def assert_head_answers_as_get(get: RawAnswer, head: RawAnswer) -> None:
    assert head.body == b"", head.body[:200]
    assert head.status == get.status
    assert int(head.headers["content-length"]) == len(get.body) > 0
    assert head.headers["content-type"] == get.headers["content-type"]
    assert {k: v for k, v in head.headers.items() if k not in OF_THE_MOMENT} == {
        k: v for k, v in get.headers.items() if k not in OF_THE_MOMENT
    }


def test_head_answers_every_get_route_with_its_status_and_headers_and_no_body(
    web: Gunicorn, reader: dict[str, str]
) -> None:
    done = stored_task(TaskStatus.DONE, result=b"\x00the result bytes\xff")
    queued = stored_task(TaskStatus.QUEUED)
    paths_and_statuses = [
        ("/api/tasks", 200),
        ("/api/tasks?status=done&limit=5", 200),
        ("/api/tasks?status=nonsense", 400),
        (f"/api/tasks/{done.uuid}", 200),
        (f"/api/tasks/{done.uuid}?wait=1", 200),
        (f"/api/tasks/{NO_SUCH_TASK}", 404),
        ("/api/tasks/not-a-uuid", 400),
        (f"/api/tasks/{done.uuid}/result", 200),
        (f"/api/tasks/{queued.uuid}/result", 409),
        ("/api/scheduler", 200),
        ("/api/openapi.json", 200),
        ("/healthz", 200),
        ("/readyz", 200),
    ]
    for path, status in paths_and_statuses:
        get, head = get_then_head(web.port, path, reader)
        assert get.status == status, (path, get)
        assert_head_answers_as_get(get, head)

    get, head = get_then_head(web.port, f"/api/tasks/{done.uuid}/result", reader)
    assert get.body == b"\x00the result bytes\xff"
    assert head.headers["content-type"] == "application/octet-stream"
    # The application dropped the bodies: gunicorn found none to drop.
    assert "dropping per RFC 9110" not in web.log_path.read_text()


def test_metrics_answer_head_without_a_body(web: Gunicorn) -> None:
    # Its counters move between two requests: only the framing is compared.
    head = exchange(web.port, request_head("HEAD", "/metrics", FROM_THE_INGRESS))
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) > 0


def test_head_of_an_unrouted_path_is_a_404_without_a_body(web: Gunicorn) -> None:
    # Its message names the method, so its length is not the GET's.
    head = exchange(web.port, request_head("HEAD", "/nothing/here", FROM_THE_INGRESS))
    assert head.status == 404
    assert head.headers["content-type"] == "application/json"
    assert int(head.headers["content-length"]) > 0
    assert head.body == b""


def test_head_needs_the_same_token_as_get(web: Gunicorn) -> None:
    submit_only = create_token([Scope.SUBMIT], name="head")[1]
    for headers, status in [
        (FROM_THE_INGRESS, 401),
        ({"Authorization": "Bearer nope", **FROM_THE_INGRESS}, 401),
        ({"Authorization": f"Bearer {submit_only}", **FROM_THE_INGRESS}, 403),
    ]:
        for path in ("/api/tasks", f"/api/tasks/{NO_SUCH_TASK}", "/api/scheduler"):
            get, head = get_then_head(web.port, path, headers)
            assert get.status == status, (path, get)
            assert_head_answers_as_get(get, head)


def test_head_is_not_allowed_where_get_is_not(web: Gunicorn) -> None:
    head = exchange(
        web.port, request_head("HEAD", "/api/scheduler/close", FROM_THE_INGRESS)
    )
    assert head.status == 405
    assert head.headers["allow"] == "POST"
    assert head.body == b""


def test_runserver_answers_head_with_the_length_of_get_and_no_body(
    live_server: Any,
) -> None:
    # live_server is runserver's own handler (django.core.servers.basehttp).
    port = int(live_server.url.rsplit(":", 1)[1])
    done = stored_task(TaskStatus.DONE, result=b"result bytes")
    for path in ("/api/scheduler", f"/api/tasks/{done.uuid}/result", "/healthz"):
        get, head = get_then_head(port, path, {})
        assert get.status == 200, (path, get)
        assert head.body == b""
        assert int(head.headers["content-length"]) == len(get.body)
        assert head.headers["content-type"] == get.headers["content-type"]
