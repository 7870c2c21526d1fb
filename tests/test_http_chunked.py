"""Chunked request bodies (Transfer-Encoding: chunked, no Content-Length) on POST /api/tasks.

gunicorn decodes the chunks and says so in ``wsgi.input_terminated``: a chunked
request is admitted as the same bytes with a Content-Length would be, and refused as
they would be (too large as soon as a byte past the limit arrives, empty). Bad framing
is a 400, never a 500, and no refused body makes a task. Django's runserver decodes
no chunks, and says so.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks_app.models import TaskRecord
from tasks_app.tokens import Scope, create_token
from tests.harness import RedisServer
from tests.live_servers import Gunicorn, production_env
from tests.raw_http import RawAnswer, chunked, exchange, parse_answer, request_head

pytestmark = pytest.mark.django_db(transaction=True)

MAX_REQUEST_BYTES = 64 * 1024
# Behind the ingress: the production settings redirect plain HTTP.
FROM_THE_INGRESS = {"X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def web(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    workdir: Path = tmp_path_factory.mktemp("chunked")
    env = production_env(
        live_database_url,
        redis_server.url,
        workdir,
        max_request_bytes=MAX_REQUEST_BYTES,
        rate_limit="off",
    )
    server = Gunicorn(env, workdir, workers=1)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def submitter() -> dict[str, str]:
    token = create_token([Scope.SUBMIT], name="chunked")[1]
    return {"Authorization": f"Bearer {token}", **FROM_THE_INGRESS}


def post(
    web: Gunicorn, body: bytes | Iterable[bytes], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """POST /api/tasks with http.client: an iterable body goes chunked, one per item."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        connection.request("POST", "/api/tasks", body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def chunked_head(headers: dict[str, str]) -> bytes:
    return request_head(
        "POST", "/api/tasks", {**headers, "Transfer-Encoding": "chunked"}
    )


def test_chunked_request_is_admitted_with_the_uuid_of_the_same_bytes_with_a_length(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    pieces = [b"a chunked ", b"\x00\xff request", b"-" * 40_000, b" end"]
    status, chunked_answer = post(web, iter(pieces), submitter)
    assert status == 201, chunked_answer
    assert chunked_answer["created"] is True

    status, answer = post(web, b"".join(pieces), submitter)
    assert status == 200, answer
    assert answer == {**chunked_answer, "created": False}
    task = TaskRecord.objects.get(uuid=chunked_answer["uuid"])
    assert bytes(task.request) == b"".join(pieces)
    assert task.hash == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_chunked_request_of_exactly_the_limit_is_admitted(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    pieces = [b"x" * 1000] * (MAX_REQUEST_BYTES // 1000) + [
        b"y" * (MAX_REQUEST_BYTES % 1000)
    ]
    status, answer = post(web, iter(pieces), submitter)
    assert status == 201, answer
    assert TaskRecord.objects.get(uuid=answer["uuid"]).request_size == (
        MAX_REQUEST_BYTES
    )


def test_chunked_request_one_byte_over_the_limit_is_413_as_a_declared_one_is(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    over = b"z" * (MAX_REQUEST_BYTES + 1)
    status, answer = post(web, iter([over[:1000], over[1000:]]), submitter)
    declared_status, declared = post(web, over, submitter)

    assert (status, answer["error"]) == (declared_status, declared["error"])
    assert status == 413
    assert answer["message"] == declared["message"].replace(
        "request of", "request of at least"
    )
    assert TaskRecord.objects.count() == 0


def test_chunked_request_over_the_limit_is_refused_before_its_last_chunk(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    # One byte past the limit, and the body never ends: the answer must come
    # without waiting for the rest, so the server read no more than it had to.
    first = b"%x\r\n%s\r\n" % (MAX_REQUEST_BYTES + 1, b"q" * (MAX_REQUEST_BYTES + 1))
    answer = exchange(web.port, chunked_head(submitter) + first, timeout=10)
    assert answer.status == 413
    assert json.loads(answer.body)["error"] == "too_large"
    assert TaskRecord.objects.count() == 0


def test_empty_chunked_request_is_refused_as_an_empty_one(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    empty = exchange(web.port, chunked_head(submitter) + chunked())
    status, declared = post(web, b"", submitter)

    assert (empty.status, status) == (400, 400)
    assert json.loads(empty.body) == declared
    assert declared["error"] == "bad_request"
    assert TaskRecord.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", id="size-not-hex"),
        pytest.param(b"3\r\nabcdef\r\n0\r\n\r\n", id="chunk-longer-than-its-size"),
        pytest.param(b"3\r\nabc", id="ends-after-a-chunk"),
        pytest.param(b"10\r\nabc", id="ends-inside-a-chunk"),
        pytest.param(b"3\r\nabc\r\n0\r\n", id="ends-before-the-trailers"),
        pytest.param(b"3\r\nabc\r\n" + b"1" * 9000, id="size-line-too-long"),
    ],
)
def test_malformed_chunked_framing_is_a_client_error_and_makes_no_task(
    web: Gunicorn, submitter: dict[str, str], body: bytes
) -> None:
    answer = exchange(web.port, chunked_head(submitter) + body, close_sending=True)

    assert 400 <= answer.status < 500, answer
    assert json.loads(answer.body)["error"] == "bad_request"
    assert TaskRecord.objects.count() == 0
    web.check_alive()


def test_no_request_after_malformed_framing_is_served_on_that_connection(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    # Where the next request starts is unknown after bad framing: a request sent
    # after it on a kept-alive connection would be a smuggled one.
    keep_alive = chunked_head(submitter).replace(b"Connection: close", b"X-A: b")
    smuggled = request_head("POST", "/api/tasks", {**submitter, "Content-Length": "3"})
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(keep_alive + b"zz\r\n")
        first = read_one_answer(sock)
        assert first.status == 400, first
        received = b""
        try:
            sock.sendall(smuggled + b"abc")
            while piece := sock.recv(65536):
                received += piece
        except OSError:
            pass  # the server closed the connection: what it should do

    assert b"HTTP/1.1" not in received, received[:300]
    assert TaskRecord.objects.count() == 0


def read_one_answer(sock: socket.socket) -> RawAnswer:
    """One answer, by its Content-Length, leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        piece = sock.recv(65536)
        assert piece, received
        received += piece
    answer = parse_answer(received)
    while len(answer.body) < int(answer.headers["content-length"]):
        piece = sock.recv(65536)
        assert piece, received
        received += piece
        answer = parse_answer(received)
    return answer


def test_transfer_coding_left_undecoded_is_refused(
    web: Gunicorn, submitter: dict[str, str]
) -> None:
    # gunicorn takes off the chunks of "gzip, chunked" and hands on the gzip.
    head = request_head(
        "POST", "/api/tasks", {**submitter, "Transfer-Encoding": "gzip, chunked"}
    )
    answer = exchange(web.port, head + chunked(b"\x1f\x8b not really gzip"))

    assert answer.status == 400
    assert "gzip" in json.loads(answer.body)["message"]
    assert TaskRecord.objects.count() == 0


def test_chunked_request_needs_a_submit_token(web: Gunicorn) -> None:
    answer = exchange(web.port, chunked_head(FROM_THE_INGRESS) + chunked(b"abc"))
    assert answer.status == 401
    assert TaskRecord.objects.count() == 0


def test_runserver_refuses_a_chunked_request_and_says_what_to_send(
    live_server: Any,
) -> None:
    # live_server is runserver's own handler (django.core.servers.basehttp), which
    # leaves the chunks on the socket and sets no wsgi.input_terminated.
    port = int(live_server.url.rsplit(":", 1)[1])
    answer: RawAnswer = exchange(port, chunked_head({}) + chunked(b"abc"))

    assert answer.status == 400
    body = json.loads(answer.body[: int(answer.headers["content-length"])])
    assert "Content-Length" in body["message"]
    assert TaskRecord.objects.count() == 0
