"""Every limit refuses with its documented code, says which limit and its value, and
stores nothing: request size, result size, Find page size, processor time, and the
per-token request rate, which every process of a deployment counts together.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from tasks_app import ratelimit
from tasks_app.grpc_api.generated import scheduler_pb2 as pb
from tasks_app.interfaces import TaskStatus
from tasks_app.models import RateCounter, TaskRecord
from tasks_app.scheduler import get_scheduler
from tasks_app.tokens import Scope, create_token
from tests.harness import Cluster, RedisServer, task_request, wait_until
from tests.live_servers import Gunicorn, Rungrpc, production_env

MAX_REQUEST_BYTES = 64 * 1024
HEADROOM_BYTES = 1024 * 1024  # grpc_api.server.MESSAGE_HEADROOM_BYTES


@pytest.fixture(autouse=True)
def fresh_scheduler() -> Iterator[None]:
    get_scheduler.cache_clear()
    yield
    get_scheduler.cache_clear()


def token_with(*scopes: Scope) -> str:
    return create_token(scopes or tuple(Scope), name="limits")[1]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# --- the rate setting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/s", ["100 per second"]),
        ("6000/m", ["6000 per minute"]),
        ("100/second", ["100 per second"]),
        ("10 per 5 minutes", ["10 per 5 minutes"]),
        ("100/s; 3000/hour", ["100 per second", "3000 per hour"]),
        ("off", []),
        ("", []),
        ("0", []),
    ],
)
def test_rate_limit_setting_parses(text: str, expected: list[str]) -> None:
    assert [
        ratelimit.describe(item) for item in ratelimit.parse_rates(text)
    ] == expected


@pytest.mark.parametrize("text", ["100", "fast", "0/s", "10/fortnight", "-1/s"])
def test_a_rate_limit_setting_that_does_not_parse_is_a_system_check_error(
    settings: Any, text: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match="SCHEDULER_RATE_LIMIT"):
        ratelimit.parse_rates(text)
    settings.SCHEDULER_RATE_LIMIT = text
    (error,) = ratelimit.check_rate_limit()
    assert error.id == "tasks_app.E101"


# --- the rate, in one process (the database counters) -----------------------------------


@pytest.mark.django_db
def test_a_token_over_its_rate_is_429_with_retry_after_and_nothing_stored(
    client: Client, settings: Any
) -> None:
    settings.SCHEDULER_AUTH_REQUIRED = True
    settings.SCHEDULER_RATE_LIMIT = "3/minute"
    settings.CELERY_BROKER_URL = "filesystem://"
    token, other = token_with(), token_with()
    headers = {"Authorization": f"Bearer {token}"}

    for _ in range(3):
        assert client.get("/api/scheduler", headers=headers).status_code == 200
    refused = client.post(
        "/api/tasks",
        data=b"over the rate",
        content_type="application/octet-stream",
        headers=headers,
    )

    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "rate_limited"
    assert "3 per minute (SCHEDULER_RATE_LIMIT)" in body["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert not TaskRecord.objects.exists()
    # Counted in the database, per token: another token still has its own rate.
    assert RateCounter.objects.count() == 1
    other_headers = {"Authorization": f"Bearer {other}"}
    assert client.get("/api/scheduler", headers=other_headers).status_code == 200
    assert RateCounter.objects.count() == 2


@pytest.mark.django_db
def test_without_authentication_nothing_is_rate_limited(
    client: Client, settings: Any
) -> None:
    settings.SCHEDULER_RATE_LIMIT = "1/minute"
    for _ in range(3):
        assert client.get("/api/scheduler").status_code == 200


# --- the rate, across processes ---------------------------------------------------------


@pytest.fixture(params=["redis", "database"])
def deployment(
    request: pytest.FixtureRequest,
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[tuple[Gunicorn, Rungrpc, str]]:
    """gunicorn with two workers and rungrpc, on the broker's Redis or the database."""
    if not redis_server.ping():
        redis_server.start()
    redis_server.flushall()
    broker = redis_server.url if request.param == "redis" else "filesystem://"
    env = production_env(live_database_url, broker, tmp_path, rate_limit="10/minute")
    web, rpc = Gunicorn(env, tmp_path, workers=2), Rungrpc(env, tmp_path)
    try:
        web.wait_ready()
        if request.param == "redis":
            rpc.wait_ready()
        else:
            # Health follows the broker, and a filesystem broker may not answer it.
            wait_until(lambda: _grpc_answers(rpc), 60, message="rungrpc to answer")
        yield web, rpc, request.param
    finally:
        rpc.stop()
        web.stop()


def _grpc_answers(server: Rungrpc) -> bool:
    server.check_alive()
    try:
        server.stub.State(pb.StateRequest(), timeout=1)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.UNAUTHENTICATED
    return True


def http_get(web: Gunicorn, path: str, token: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"{web.url}{path}",
        headers={"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        return error.code, {**body, "retry-after": error.headers.get("Retry-After")}


@pytest.mark.django_db(transaction=True)
def test_the_rate_is_shared_by_every_web_and_grpc_process(
    deployment: tuple[Gunicorn, Rungrpc, str], redis_server: RedisServer
) -> None:
    web, rpc, storage = deployment
    token = token_with(Scope.READ)

    def over_http(_: int) -> str:
        status, body = http_get(web, "/api/scheduler", token)
        if status == 429:
            assert "10 per minute" in body["message"]
            assert int(body["retry-after"]) >= 1
            return "refused"
        assert status == 200, body
        return "ok"

    def over_grpc(_: int) -> str:
        try:
            rpc.stub.State(pb.StateRequest(), timeout=10, metadata=bearer(token))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            trailing = dict(error.trailing_metadata() or ())
            assert trailing["error-code"] == "rate_limited"
            assert int(trailing["retry-after"]) >= 1
            return "refused"
        return "ok"

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [
            *pool.map(over_http, range(10)),
            *pool.map(over_grpc, range(10)),
        ]

    assert answers.count("ok") == 10, answers
    assert answers.count("refused") == 10
    if storage == "redis":
        assert redis_server.command("KEYS", "LIMITS*").strip()
    else:
        assert RateCounter.objects.filter(key__contains="token").exists()


# --- request size -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gunicorn, Rungrpc]]:
    workdir = tmp_path_factory.mktemp("limits")
    env = production_env(
        live_database_url,
        redis_server.url,
        workdir,
        max_request_bytes=MAX_REQUEST_BYTES,
        rate_limit="off",
    )
    web, rpc = Gunicorn(env, workdir, workers=1), Rungrpc(env, workdir)
    try:
        yield web.wait_ready(), rpc.wait_ready()
    finally:
        rpc.stop()
        web.stop()


@pytest.mark.django_db(transaction=True)
def test_a_declared_size_over_the_limit_is_413_before_the_body_is_sent(
    servers: tuple[Gunicorn, Rungrpc],
) -> None:
    web, _ = servers
    token = token_with(Scope.SUBMIT)
    head = (
        "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {1024**3}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        # A gigabyte declared, a kilobyte sent: the answer must not wait for the rest.
        sock.sendall(head.encode() + b"x" * 1024)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "too_large"
    assert f"limit of {MAX_REQUEST_BYTES} bytes" in body["message"]
    assert "SCHEDULER_MAX_REQUEST_BYTES" in body["message"]
    assert not TaskRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "size", [MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES + HEADROOM_BYTES + 1]
)
def test_a_grpc_request_over_the_limit_is_resource_exhausted(
    servers: tuple[Gunicorn, Rungrpc], size: int
) -> None:
    _, rpc = servers
    token = token_with(Scope.SUBMIT)

    error = grpc_error(
        lambda: rpc.stub.AddTask(
            pb.AddTaskRequest(request=b"x" * size), timeout=10, metadata=bearer(token)
        )
    )

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    if size <= MAX_REQUEST_BYTES + HEADROOM_BYTES:
        # Under the transport's own cap, the scheduler names the setting.
        assert f"limit of {MAX_REQUEST_BYTES} bytes" in (error.details() or "")
        assert "SCHEDULER_MAX_REQUEST_BYTES" in (error.details() or "")
    assert not TaskRecord.objects.exists()


# --- Find page size -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_find_page_over_1000_is_refused_over_both_apis(
    servers: tuple[Gunicorn, Rungrpc],
) -> None:
    web, rpc = servers
    token = token_with(Scope.READ)

    status, body = http_get(web, "/api/tasks?limit=1001", token)
    assert status == 400
    assert body["error"] == "bad_request" and "1000" in body["message"]
    assert http_get(web, "/api/tasks?limit=1000", token)[0] == 200

    error = grpc_error(
        lambda: rpc.stub.FindTasks(
            pb.FindTasksRequest(limit=1001), timeout=10, metadata=bearer(token)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1000" in (error.details() or "")


# --- result size and processor time, through a real worker -------------------------------


def wait_finished(scheduler: Any, uuid: str, timeout: float = 60) -> Any:
    wait_until(
        lambda: scheduler.get_task(uuid).status.is_finished,
        timeout,
        message=f"task {uuid} to finish",
    )
    return scheduler.get_task(uuid)


def test_a_result_over_the_limit_makes_the_task_error_and_is_not_stored(
    cluster: Cluster, scheduler: Any
) -> None:
    # The test processor answers "result:" and the request: 7 bytes more than it.
    cluster.configure(scheduler_max_result_bytes=100)
    cluster.start_worker(concurrency=1)

    fits = scheduler.add_task(task_request(id="fits"))
    too_large = scheduler.add_task(task_request(id="x" * 100))

    assert wait_finished(scheduler, fits).status == TaskStatus.DONE
    failed = wait_finished(scheduler, too_large)
    assert failed.status == TaskStatus.ERROR
    assert "over the limit of 100 bytes (SCHEDULER_MAX_RESULT_BYTES)" in failed.error
    assert scheduler.storage.get_result(too_large) == (TaskStatus.ERROR, None)
    assert failed.result_size is None


def test_a_processor_over_its_time_limit_makes_the_task_error(
    cluster: Cluster, scheduler: Any
) -> None:
    cluster.configure(scheduler_task_time_limit=1)
    cluster.start_worker(concurrency=1)

    uuid = scheduler.add_task(task_request(id="slow", sleep=60))

    failed = wait_finished(scheduler, uuid, timeout=30)
    assert failed.status == TaskStatus.ERROR
    assert "SCHEDULER_TASK_TIME_LIMIT=1 s" in failed.error
