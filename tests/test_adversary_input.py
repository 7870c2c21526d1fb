"""Hostile input that the API answered with a 500, or accepted when it should not.

Each test sends what a buggy or hostile client sends, to the real servers where the
server matters (gunicorn, the gRPC server), and asserts the contract: a JSON error with
the right status, or the right gRPC code, and no task made from bytes never sent.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from django.test import Client

from tasks_app.grpc_api.generated import scheduler_pb2 as pb
from tasks_app.grpc_api.generated import scheduler_pb2_grpc as pb_grpc
from tasks_app.grpc_api.server import GrpcServer
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler, get_scheduler
from tests.harness import Cluster, WebServer

pytestmark = pytest.mark.django_db(transaction=True)

SOME_UUID = "0b7e6f55-9c3b-4c39-9d43-2a0f1d1b7c11"


def cursor_of(created_at: object, uuid: object) -> str:
    raw = json.dumps([created_at, uuid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture
def client() -> Iterator[Client]:
    get_scheduler.cache_clear()
    yield Client()
    get_scheduler.cache_clear()


@pytest.fixture
def stub(scheduler: Scheduler) -> Iterator[pb_grpc.SchedulerStub]:
    server = GrpcServer(
        scheduler, host="127.0.0.1", port=0, max_request_bytes=1024 * 1024
    )
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.SchedulerStub(channel)
    finally:
        server.stop(1)


def assert_bad_request(response: Any) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "bad_request"


def find_code(stub: pb_grpc.SchedulerStub, **fields: Any) -> grpc.StatusCode:
    try:
        stub.FindTasks(pb.FindTasksRequest(**fields), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("created_at", [1, None, ["2030-01-01"]])
def test_cursor_whose_time_is_not_a_string_is_bad_input(
    client: Client, stub: pb_grpc.SchedulerStub, created_at: object
) -> None:
    cursor = cursor_of(created_at, SOME_UUID)
    assert_bad_request(client.get(f"/api/tasks?cursor={cursor}"))
    assert find_code(stub, cursor=cursor) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("depth", [100, 3000])
def test_a_cursor_nested_deep_is_bad_input_not_a_crash(
    client: Client, stub: pb_grpc.SchedulerStub, depth: int
) -> None:
    """Unsigned base64 JSON: nested deep enough, the parser ran out of stack (500)."""
    nested = ("[" * depth + "]" * depth).encode()
    cursor = base64.urlsafe_b64encode(nested).decode().rstrip("=")
    assert_bad_request(client.get(f"/api/tasks?cursor={cursor}"))
    assert find_code(stub, cursor=cursor) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def web(cluster: Cluster) -> Iterator[WebServer]:
    server = WebServer(cluster.env, cluster.workdir).start()
    try:
        yield server
    finally:
        server.stop()


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, close the sending side as a client that gave up does, read all."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_upload_cut_off_before_its_content_length_makes_no_task(web: WebServer) -> None:
    head = b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    answer = exchange(web.port, head + b"the first half of an upload")

    assert not answer.startswith(b"HTTP/1.1 201"), answer
    assert TaskRecord.objects.count() == 0


def test_find_with_a_few_hundred_uuids_in_an_in_answers_json(web: WebServer) -> None:
    uuids = ",".join([SOME_UUID] * 200)
    line = f"GET /api/tasks?uuid__in={uuids} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answer = exchange(web.port, line)

    status_line, _, rest = answer.partition(b"\r\n")
    assert b"application/json" in rest.partition(b"\r\n\r\n")[0], status_line
    assert status_line.split()[1] in (b"200", b"400"), status_line


def answer_parts(answer: bytes) -> tuple[int, bytes, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, _, headers = head.partition(b"\r\n")
    return int(status_line.split()[1]), headers.lower(), json.loads(body)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # A request line over gunicorn's limit_request_line.
        (b"GET /api/tasks?status=" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n", 414),
        (b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n", 400),
        (b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n", 400),
        (b"GET /api/tasks HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n", 400),
        (b"GET /api/tasks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n", 431),
    ],
)
def test_what_gunicorn_refuses_itself_is_a_json_error_too(
    web: WebServer, request_head: bytes, status: int
) -> None:
    answer = exchange(web.port, request_head + b"\r\n")

    answered, headers, body = answer_parts(answer)
    assert answered == status, answer[:300]
    assert b"content-type: application/json" in headers, answer[:300]
    assert body["error"] == "bad_request"
    # Named, and not the whole of what was sent back at the sender.
    assert body["message"] and len(body["message"]) < 400, body
    assert TaskRecord.objects.count() == 0
