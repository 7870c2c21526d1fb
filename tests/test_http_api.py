"""The HTTP API as a client sees it: status codes, JSON bodies, headers, real workers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client

from tasks_app import health
from tasks_app.interfaces import UUID, Task, TaskStatus
from tasks_app.scheduler import get_scheduler
from tasks_app.storage import DjangoTaskStorage
from tests.harness import Cluster, task_request

pytestmark = pytest.mark.django_db

NO_SUCH_TASK = "0b7e6f55-9c3b-4c39-9d43-2a0f1d1b7c11"
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def fresh_scheduler() -> Iterator[None]:
    """The API's scheduler is built from settings once per process: rebuild it per test."""
    get_scheduler.cache_clear()
    health.reset_shutdown()
    yield
    get_scheduler.cache_clear()
    health.reset_shutdown()


@pytest.fixture
def configure(settings: Any) -> Callable[..., None]:
    """Change scheduler settings for this test, and rebuild the API's scheduler."""

    def apply(**overrides: object) -> None:
        for name, value in overrides.items():
            setattr(settings, name, value)
        get_scheduler.cache_clear()

    return apply


def post_task(client: Client, body: bytes, **extra: Any) -> Any:
    content_type = extra.pop("content_type", "application/octet-stream")
    return client.post("/api/tasks", data=body, content_type=content_type, **extra)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def stored_task(
    status: TaskStatus = TaskStatus.DONE,
    *,
    request: bytes | None = None,
    result: bytes | None = None,
    attempts: int = 1,
    created_at: dt.datetime = T0,
    error: str = "",
    worker: str = "w1",
) -> Task:
    """A task written through the Storage interface, in any status, without a worker."""
    request = request if request is not None else uuid_module.uuid4().bytes
    finished = status.is_finished
    task = Task(
        uuid=UUID(str(uuid_module.uuid4())),
        hash=hashlib.sha256(request).hexdigest(),
        status=status,
        request=request,
        result=result if status == TaskStatus.DONE else None,
        error=error,
        attempts=attempts,
        created_at=created_at,
        started_at=created_at + dt.timedelta(seconds=1) if attempts else None,
        finished_at=created_at + dt.timedelta(seconds=3) if finished else None,
        request_size=len(request),
        result_size=len(result) if result is not None else None,
        worker=worker,
    )
    DjangoTaskStorage().store(task)
    return task


# --- submitting -------------------------------------------------------------------------


def test_new_request_is_201_and_the_same_bytes_again_are_200_with_the_same_uuid(
    client: Client,
) -> None:
    first = post_task(client, b"the same bytes")
    assert first.status_code == 201
    assert first.json() == {
        "uuid": first.json()["uuid"],
        "status": "queued",
        "created": True,
    }

    again = post_task(client, b"the same bytes", content_type="text/plain")
    assert again.status_code == 200
    assert again.json() == {
        "uuid": first.json()["uuid"],
        "status": "queued",
        "created": False,
    }
    assert get_scheduler().state().queued == 1


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/json",
        "",
    ],
)
def test_body_is_taken_as_raw_bytes_whatever_the_content_type(
    client: Client, content_type: str
) -> None:
    body = b"a=1&b=2\r\n--xyz\r\n{not json}\x00\xff"
    response = post_task(client, body, content_type=content_type)
    assert response.status_code == 201
    stored = DjangoTaskStorage().get(response.json()["uuid"])
    assert stored.request == body
    assert stored.hash == hashlib.sha256(body).hexdigest()


def test_empty_request_is_400(client: Client) -> None:
    assert_error(post_task(client, b""), 400, "bad_request")


def test_declared_size_over_the_limit_is_413_before_the_body_is_read(
    client: Client,
) -> None:
    # The body is one byte but claims a terabyte: reading it would fail in the test
    # client, so a 413 proves the size was checked first.
    response = post_task(client, b"x", CONTENT_LENGTH=str(10**12))
    body = assert_error(response, 413, "too_large")
    assert "SCHEDULER_MAX_REQUEST_BYTES" in body["message"]


def test_body_over_scheduler_max_request_bytes_is_413(
    client: Client, configure: Callable[..., None]
) -> None:
    configure(SCHEDULER_MAX_REQUEST_BYTES=1000)
    assert_error(post_task(client, b"x" * 1001), 413, "too_large")
    assert post_task(client, b"x" * 1000).status_code == 201


def test_body_over_djangos_own_upload_limit_is_413_not_400(
    client: Client, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = assert_error(post_task(client, b"y" * 2000), 413, "too_large")
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in body["message"]


def test_malformed_content_length_is_400(client: Client) -> None:
    assert_error(post_task(client, b"x", CONTENT_LENGTH="lots"), 400, "bad_request")


def test_djangos_upload_limit_sits_above_the_schedulers(settings: Any) -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE > settings.SCHEDULER_MAX_REQUEST_BYTES


def test_full_queue_is_429_with_retry_after_and_a_duplicate_is_still_answered(
    client: Client, configure: Callable[..., None]
) -> None:
    configure(SCHEDULER_QUEUE_SIZE=2)
    first = post_task(client, b"one")
    assert first.status_code == 201
    assert post_task(client, b"two").status_code == 201

    refused = post_task(client, b"three")
    assert_error(refused, 429, "queue_full")
    assert int(refused["Retry-After"]) >= 1

    duplicate = post_task(client, b"one")
    assert duplicate.status_code == 200
    assert duplicate.json()["uuid"] == first.json()["uuid"]


def test_closed_scheduler_is_503_with_retry_after_for_duplicates_too(
    client: Client,
) -> None:
    post_task(client, b"known")
    closed = client.post("/api/scheduler/close")
    assert closed.status_code == 200
    assert closed.json()["closed"] is True

    for body in (b"new", b"known"):
        refused = post_task(client, body)
        assert_error(refused, 503, "closed")
        assert int(refused["Retry-After"]) >= 1

    assert client.post("/api/scheduler/open").status_code == 200
    assert post_task(client, b"new").status_code == 201


# --- reading tasks ----------------------------------------------------------------------


def test_task_answers_every_field_but_the_bytes_with_utc_iso_times(
    client: Client,
) -> None:
    task = stored_task(TaskStatus.DONE, request=b"in", result=b"out!", attempts=2)
    response = client.get(f"/api/tasks/{task.uuid.upper()}")
    assert response.status_code == 200
    body = response.json()

    assert body == {
        "uuid": task.uuid,
        "hash": task.hash,
        "status": "done",
        "error": "",
        "attempts": 2,
        "created_at": "2030-01-01T00:00:00Z",
        "started_at": "2030-01-01T00:00:01Z",
        "finished_at": "2030-01-01T00:00:03Z",
        "request_size": 2,
        "result_size": 4,
        "worker": "w1",
    }


def test_times_keep_their_microseconds(client: Client) -> None:
    created = dt.datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    task = stored_task(TaskStatus.QUEUED, attempts=0, created_at=created)
    body = client.get(f"/api/tasks/{task.uuid}").json()
    assert body["created_at"] == "2030-01-01T12:00:00.123456Z"
    assert body["started_at"] is None and body["finished_at"] is None


def test_unknown_task_is_404(client: Client) -> None:
    for path in (
        f"/api/tasks/{NO_SUCH_TASK}",
        f"/api/tasks/{NO_SUCH_TASK}/result",
    ):
        assert_error(client.get(path), 404, "not_found")
    assert_error(client.post(f"/api/tasks/{NO_SUCH_TASK}/retry"), 404, "not_found")


@pytest.mark.parametrize(
    "bad", ["not-a-uuid", "1234", "0b7e6f55-9c3b-4c39-9d43-2a0f1d1b7c1z"]
)
def test_malformed_uuid_is_400_not_404(client: Client, bad: str) -> None:
    assert_error(client.get(f"/api/tasks/{bad}"), 400, "bad_request")
    assert_error(client.get(f"/api/tasks/{bad}/result"), 400, "bad_request")
    assert_error(client.post(f"/api/tasks/{bad}/retry"), 400, "bad_request")


def test_result_is_the_raw_bytes_of_a_done_task(client: Client) -> None:
    result = bytes(range(256)) * 3
    task = stored_task(TaskStatus.DONE, result=result)
    response = client.get(f"/api/tasks/{task.uuid}/result")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response.content == result


@pytest.mark.parametrize(
    "status", [TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.ERROR]
)
def test_result_of_a_task_not_done_is_409_with_its_status(
    client: Client, status: TaskStatus
) -> None:
    task = stored_task(status, error="boom" if status == TaskStatus.ERROR else "")
    body = assert_error(client.get(f"/api/tasks/{task.uuid}/result"), 409, "conflict")
    assert body["status"] == status.value


@pytest.mark.parametrize("wait", ["61", "-1", "soon", "nan", "inf"])
def test_wait_out_of_range_is_400(client: Client, wait: str) -> None:
    task = stored_task(TaskStatus.QUEUED, attempts=0)
    assert_error(client.get(f"/api/tasks/{task.uuid}?wait={wait}"), 400, "bad_request")


def test_wait_answers_after_n_seconds_when_the_task_does_not_finish(
    client: Client,
) -> None:
    task = stored_task(TaskStatus.QUEUED, attempts=0)
    started = time.monotonic()
    response = client.get(f"/api/tasks/{task.uuid}?wait=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert 1.0 <= elapsed < 2.5


def test_wait_answers_at_once_when_the_task_is_finished(client: Client) -> None:
    task = stored_task(TaskStatus.ERROR, error="ValueError: nope")
    started = time.monotonic()
    body = client.get(f"/api/tasks/{task.uuid}?wait=30").json()
    assert time.monotonic() - started < 1
    assert body["status"] == "error"
    assert body["error"] == "ValueError: nope"


def test_wait_stops_holding_once_the_process_shuts_down(client: Client) -> None:
    task = stored_task(TaskStatus.QUEUED, attempts=0)
    health.begin_shutdown()
    started = time.monotonic()
    assert client.get(f"/api/tasks/{task.uuid}?wait=30").status_code == 200
    assert time.monotonic() - started < 1


@pytest.mark.django_db(transaction=True)
def test_wait_holds_the_answer_until_a_real_worker_finishes_the_task(
    cluster: Cluster,
) -> None:
    client = Client()
    cluster.start_worker(concurrency=1)
    request = task_request(id="wait for me", sleep=1.5)
    uuid = post_task(client, request).json()["uuid"]

    started = time.monotonic()
    response = client.get(f"/api/tasks/{uuid}?wait=30")
    elapsed = time.monotonic() - started

    body = response.json()
    assert body["status"] == "done", cluster.logs()
    assert 1.0 <= elapsed < 20
    assert body["result_size"] == len(b"result:" + request)
    result = client.get(f"/api/tasks/{uuid}/result")
    assert result.content == b"result:" + request
    assert cluster.call_log.calls_per_hash() == {body["hash"]: 1}


# --- retry ------------------------------------------------------------------------------


def test_retry_queues_a_task_in_error_again_under_the_same_uuid(client: Client) -> None:
    task = stored_task(TaskStatus.ERROR, attempts=3, error="RuntimeError: flaky")
    response = client.post(f"/api/tasks/{task.uuid}/retry")
    assert response.status_code == 200
    body = response.json()
    assert body["uuid"] == task.uuid
    assert body["status"] == "queued"
    assert body["attempts"] == 0
    assert body["error"] == ""


@pytest.mark.parametrize(
    "status", [TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.DONE]
)
def test_retry_of_a_task_not_in_error_is_409(
    client: Client, status: TaskStatus
) -> None:
    task = stored_task(status, result=b"r")
    body = assert_error(client.post(f"/api/tasks/{task.uuid}/retry"), 409, "conflict")
    assert body["status"] == status.value
    assert client.get(f"/api/tasks/{task.uuid}").json()["status"] == status.value


def test_retry_when_closed_is_503(client: Client) -> None:
    task = stored_task(TaskStatus.ERROR, error="x")
    client.post("/api/scheduler/close")
    response = client.post(f"/api/tasks/{task.uuid}/retry")
    assert_error(response, 503, "closed")
    assert "Retry-After" in response


# --- find -------------------------------------------------------------------------------


@pytest.fixture
def five_tasks() -> dict[str, Task]:
    """Five tasks a minute apart, oldest first, in every status."""

    def at(minutes: int) -> dt.datetime:
        return T0 + dt.timedelta(minutes=minutes)

    return {
        "queued": stored_task(TaskStatus.QUEUED, attempts=0, created_at=at(0)),
        "processing": stored_task(TaskStatus.PROCESSING, created_at=at(1)),
        "done": stored_task(
            TaskStatus.DONE, result=b"12345", attempts=2, created_at=at(2)
        ),
        "error": stored_task(
            TaskStatus.ERROR, attempts=3, error="boom", created_at=at(3), worker="w2"
        ),
        "done_late": stored_task(
            TaskStatus.DONE, result=b"1", attempts=1, created_at=at(4)
        ),
    }


def found(client: Client, query: str) -> list[str]:
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"items", "next"}
    return [item["uuid"] for item in body["items"]]


def names(tasks: dict[str, Task], *keys: str) -> list[str]:
    return [tasks[key].uuid for key in keys]


def test_find_with_each_operator_newest_first(
    client: Client, five_tasks: dict[str, Task]
) -> None:
    t = five_tasks
    assert found(client, "") == names(
        t, "done_late", "error", "done", "processing", "queued"
    )
    assert found(client, "status=done") == names(t, "done_late", "done")
    assert found(client, "status__ne=done") == names(t, "error", "processing", "queued")
    assert found(client, "attempts__lt=1") == names(t, "queued")
    assert found(client, "attempts__lte=1") == names(
        t, "done_late", "processing", "queued"
    )
    assert found(client, "attempts__gt=1") == names(t, "error", "done")
    assert found(client, "attempts__gte=2") == names(t, "error", "done")
    assert found(client, "status__in=queued,error") == names(t, "error", "queued")
    assert found(client, "worker=w2") == names(t, "error")
    assert found(client, "result_size__gte=2") == names(t, "done")
    three_minutes_in = quote((T0 + dt.timedelta(minutes=3)).isoformat())
    assert found(client, f"created_at__gte={three_minutes_in}") == names(
        t, "done_late", "error"
    )
    assert found(client, "created_at__lt=2030-01-01T00:01:00Z") == names(t, "queued")
    assert found(client, f"hash={t['done'].hash.upper()}") == names(t, "done")
    assert found(client, f"uuid={t['error'].uuid.upper()}") == names(t, "error")
    # Conditions combine: all must hold.
    assert found(client, "status=done&attempts__gte=2") == names(t, "done")
    assert found(client, "status=done&status=error") == []


@pytest.mark.parametrize(
    "query",
    [
        "colour=red",
        "request=abc",
        "status__like=do",
        "status__=done",
        "status__lt=done",
        "status=finished",
        "attempts=many",
        "attempts__in=1,two",
        "created_at__gt=yesterday",
        "uuid=not-a-uuid",
        "status__in=",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=not-one-of-ours",
    ],
)
def test_bad_find_is_400(
    client: Client, five_tasks: dict[str, Task], query: str
) -> None:
    assert_error(client.get(f"/api/tasks?{query}"), 400, "bad_request")


@pytest.mark.parametrize(
    "path",
    [
        "/api/tasks/" + "a" * 5000,
        "/api/tasks?uuid=" + "b" * 5000,
        "/api/tasks?" + "c" * 5000 + "=1",
        "/api/tasks?status__" + "d" * 5000 + "=done",
        "/api/tasks?created_at__gt=" + "e" * 5000,
    ],
)
def test_a_long_bad_input_is_named_in_the_error_not_sent_back_whole(
    client: Client, path: str
) -> None:
    message = assert_error(client.get(path), 400, "bad_request")["message"]
    assert len(message) < 300, message


def test_cursor_pages_through_every_task_once_newest_first(client: Client) -> None:
    created = [
        stored_task(
            TaskStatus.QUEUED,
            attempts=0,
            # Pairs share a creation time: the cursor must still order within them.
            created_at=T0 + dt.timedelta(seconds=index // 2),
        )
        for index in range(25)
    ]
    expected = [
        task.uuid
        for task in sorted(created, key=lambda t: (t.created_at, t.uuid), reverse=True)
    ]

    seen: list[str] = []
    pages = []
    query = "limit=10"
    while True:
        body = client.get(f"/api/tasks?{query}").json()
        pages.append(len(body["items"]))
        seen.extend(item["uuid"] for item in body["items"])
        if body["next"] is None:
            break
        query = f"limit=10&cursor={body['next']}"

    assert pages == [10, 10, 5]
    assert seen == expected


def test_find_limit_defaults_to_100(client: Client) -> None:
    for index in range(101):
        stored_task(
            TaskStatus.QUEUED, attempts=0, created_at=T0 + dt.timedelta(seconds=index)
        )
    body = client.get("/api/tasks").json()
    assert len(body["items"]) == 100
    assert body["next"] is not None


# --- the scheduler ----------------------------------------------------------------------


def test_scheduler_state_and_close_open_through_the_api(client: Client) -> None:
    post_task(client, b"a queued one")
    state = client.get("/api/scheduler").json()
    assert state == {
        "state": "accepting",
        "closed": False,
        "queued": 1,
        "processing": 0,
        "num_workers": get_scheduler().num_workers,
        "queue_size": get_scheduler().queue_size,
    }

    closed = client.post("/api/scheduler/close").json()
    assert closed["state"] == "draining" and closed["closed"] is True
    assert client.get("/api/scheduler").json()["closed"] is True

    opened = client.post("/api/scheduler/open").json()
    assert opened["state"] == "accepting" and opened["closed"] is False


def test_closing_an_empty_scheduler_reports_drained(client: Client) -> None:
    assert client.post("/api/scheduler/close").json()["state"] == "drained"


# --- errors outside the routes ----------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/api/", "/api/nope", "/api/tasks/x/y", "/api/tasks/x/result/z"]
)
def test_unrouted_path_is_a_json_404(client: Client, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")
    assert_error(client.post(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("delete", "/api/tasks", "GET, HEAD, POST"),
        ("put", f"/api/tasks/{NO_SUCH_TASK}", "GET, HEAD"),
        ("post", f"/api/tasks/{NO_SUCH_TASK}", "GET, HEAD"),
        ("get", f"/api/tasks/{NO_SUCH_TASK}/retry", "POST"),
        ("post", f"/api/tasks/{NO_SUCH_TASK}/result", "GET, HEAD"),
        ("get", "/api/scheduler/close", "POST"),
        ("post", "/api/scheduler", "GET, HEAD"),
        ("post", "/healthz", "GET, HEAD"),
        ("delete", "/readyz", "GET, HEAD"),
    ],
)
def test_wrong_method_is_a_json_405_with_allow(
    client: Client, method: str, path: str, allowed: str
) -> None:
    response = getattr(client, method)(path)
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == allowed


def test_no_bad_input_is_a_500(client: Client) -> None:
    odd = ["%00", "%ff%fe", "'; drop table x;--", "\u00e9" * 300, "a" * 5000]
    for value in odd:
        for path in (
            f"/api/tasks/{value}",
            f"/api/tasks?status={value}",
            f"/api/tasks?created_at__gt={value}",
            f"/api/tasks?uuid__in={value},{value}",
            f"/api/tasks?cursor={value}",
        ):
            response = client.get(path)
            assert response.status_code in (400, 404), (path, response.content)
            assert response.json()["error"] in ("bad_request", "not_found")


def test_authentication_required_answers_401_but_probes_stay_open(
    client: Client, settings: Any
) -> None:
    settings.SCHEDULER_AUTH_REQUIRED = True
    assert_error(post_task(client, b"x"), 401, "unauthenticated")
    assert_error(client.get("/api/tasks"), 401, "unauthenticated")
    assert_error(
        client.post("/api/scheduler/close", HTTP_AUTHORIZATION="Bearer nope"),
        401,
        "unauthenticated",
    )
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200


def test_openapi_schema_lists_every_route(client: Client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths) == {
        "/api/tasks",
        "/api/tasks/{uuid}",
        "/api/tasks/{uuid}/result",
        "/api/tasks/{uuid}/retry",
        "/api/scheduler",
        "/api/scheduler/close",
        "/api/scheduler/open",
    }
    submit = paths["/api/tasks"]["post"]
    assert "application/octet-stream" in submit["requestBody"]["content"]
    assert {"201", "200", "413", "429", "503"} <= set(submit["responses"])


def test_head_is_answered_but_not_listed_as_an_operation_of_its_own(
    client: Client,
) -> None:
    schema = client.get("/api/openapi.json").json()
    assert all("head" not in operations for operations in schema["paths"].values())
    assert "HEAD" in schema["info"]["description"]
    for path in ("/api/tasks", f"/api/tasks/{NO_SUCH_TASK}", "/api/scheduler"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code
        assert head["Content-Length"] == str(len(get.content))


# --- health -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_readyz_is_200_while_database_and_broker_answer_even_when_closed(
    client: Client, redis_server: Any
) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "shutdown": "running",
        "database": "ok",
        "broker": "ok",
    }

    get_scheduler().close()
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_once_the_process_shuts_down_and_healthz_stays_200(
    client: Client,
) -> None:
    health.begin_shutdown()
    body = assert_error(client.get("/readyz"), 503, "not_ready")
    assert body["checks"]["shutdown"] == "shutting down"
    assert client.get("/healthz").status_code == 200


def test_readyz_is_503_when_the_broker_does_not_answer(client: Client) -> None:
    from scheduler_project.celery import app
    from tests.harness import free_port

    original = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        started = time.monotonic()
        body = assert_error(client.get("/readyz"), 503, "not_ready")
        assert time.monotonic() - started < 5
    finally:
        app.conf.broker_url = original
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"
    assert "broker" in body["message"]


TOO_MANY_FIELDS = "&".join(f"f{n}=1" for n in range(1001))


@pytest.mark.parametrize("path", ["/api/tasks", f"/api/tasks/{NO_SUCH_TASK}"])
def test_more_query_fields_than_django_parses_is_400_not_500(
    client: Client, path: str
) -> None:
    body = assert_error(client.get(f"{path}?{TOO_MANY_FIELDS}"), 400, "bad_request")
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in body["message"]


def test_djangos_own_400_outside_the_api_is_json(client: Client) -> None:
    # CSRF's check reads the form before any view: Django's handler400 answers.
    response = client.post(
        "/admin/login/",
        data=TOO_MANY_FIELDS,
        content_type="application/x-www-form-urlencoded",
    )
    assert_error(response, 400, "bad_request")


def test_error_bodies_are_json_objects(client: Client) -> None:
    raw = client.get("/nope").content
    assert json.loads(raw) == {
        "error": "not_found",
        "message": "nothing is at GET /nope",
    }
