"""The gRPC server as a client sees it: `manage.py rungrpc` in its own process.

The server runs on the test database and the session's Redis; the tests call it with a
real grpcio client, through the committed stubs and, once, through reflection alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from django.db import connection
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tasks_app.grpc_api.generated import scheduler_pb2 as pb
from tasks_app.grpc_api.generated import scheduler_pb2_grpc as pb_grpc
from tasks_app.grpc_api.interceptors import OPEN_SERVICES, service_of
from tasks_app.grpc_api.server import GrpcServer
from tasks_app.grpc_api.status import Failure, refusing_handler
from tests.harness import (
    ROOT,
    Cluster,
    RedisServer,
    free_port,
    task_request,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

MAX_REQUEST_BYTES = 64 * 1024
SERVICE = "scheduler.v1.Scheduler"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServerProcess:
    """``manage.py rungrpc`` on a free port, with its log kept for failures."""

    def __init__(
        self, database_url: str, broker_url: str, workdir: Path, **settings: object
    ) -> None:
        self.port = free_port()
        self.log_path = workdir / f"rungrpc-{self.port}.log"
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SCHEDULER_", "CELERY_"))
            },
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "PYTHONPATH": str(ROOT),
            "SCHEDULER_PROCESSOR": "tests.processors:RecordingProcessor",
            "SCHEDULER_DATA_DIR": str(workdir / "data"),
            "SCHEDULER_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "LOG_LEVEL": "DEBUG",
        }
        env.update({f"SCHEDULER_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "rungrpc",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--grace",
                "5",
                "--health-interval",
                "0.5",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.SchedulerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(
        self, timeout: float = 60, serving: bool = True
    ) -> GrpcServerProcess:
        """Wait until health answers SERVING (or, with ``serving=False``, anything)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rungrpc exited:\n{self.log_tail()}")
            status = self.health_status()
            if status is not None and (status == SERVING or not serving):
                return self
            time.sleep(0.2)
        raise AssertionError(f"rungrpc not serving in {timeout} s:\n{self.log_tail()}")

    def health_status(self, service: str = "") -> int | None:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(self.health.Check(request, timeout=1).status)
        except grpc.RpcError:
            return None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def server(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GrpcServerProcess]:
    process = GrpcServerProcess(
        live_database_url, redis_server.url, tmp_path_factory.mktemp("grpc")
    )
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture
def stub(server: GrpcServerProcess) -> pb_grpc.SchedulerStub:
    return server.stub


@pytest.fixture
def start_server(
    live_database_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[object]:
    """Start a server of the test's own, with SCHEDULER_* settings of its own."""
    started: list[GrpcServerProcess] = []

    def start(
        broker_url: str | None = None, serving: bool = True, **settings: object
    ) -> GrpcServerProcess:
        process = GrpcServerProcess(
            live_database_url, broker_url or redis_server.url, tmp_path, **settings
        )
        started.append(process)
        return process.wait_ready(serving=serving)

    yield start
    for process in started:
        process.stop()


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def error_code(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("error-code", "")


def add(stub: pb_grpc.SchedulerStub, request: bytes) -> pb.AddTaskResponse:
    return stub.AddTask(pb.AddTaskRequest(request=request), timeout=10)


def status_of(stub: pb_grpc.SchedulerStub, uuid: str) -> str:
    return str(stub.GetTask(pb.GetTaskRequest(uuid=uuid), timeout=10).status)


# --- AddTask and GetTask ----------------------------------------------------------------


def test_add_task_answers_a_new_uuid_created_and_queued(stub) -> None:  # type: ignore[no-untyped-def]
    answer = add(stub, b"a new request")

    assert len(answer.uuid) == 36 and answer.uuid == answer.uuid.lower()
    assert answer.created is True
    assert answer.status == "queued"


def test_identical_request_answers_the_existing_uuid_not_created(stub) -> None:  # type: ignore[no-untyped-def]
    first = add(stub, b"the same bytes")
    second = add(stub, b"the same bytes")

    assert second.uuid == first.uuid
    assert second.created is False
    assert second.status == "queued"
    page = stub.FindTasks(pb.FindTasksRequest(), timeout=10)
    assert [item.uuid for item in page.items] == [first.uuid]


def test_get_task_answers_flat_fields_with_unset_times_absent(stub) -> None:  # type: ignore[no-untyped-def]
    added = add(stub, b"twelve bytes")

    task = stub.GetTask(pb.GetTaskRequest(uuid=added.uuid.upper()), timeout=10)

    assert task.uuid == added.uuid
    assert task.hash == hashlib.sha256(b"twelve bytes").hexdigest()
    assert task.status == "queued"
    assert task.request_size == 12
    assert task.attempts == 0
    assert task.HasField("created_at")
    assert abs(task.created_at.ToDatetime().timestamp() - time.time()) < 60
    assert not task.HasField("started_at")
    assert not task.HasField("finished_at")
    assert not task.HasField("result_size")
    assert not hasattr(task, "request") and not hasattr(task, "result")


def test_malformed_uuid_is_invalid_argument(stub) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(lambda: stub.GetTask(pb.GetTaskRequest(uuid="not-a-uuid")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a UUID" in error.details()
    assert error_code(error) == "bad_request"


def test_unknown_uuid_is_not_found(stub) -> None:  # type: ignore[no-untyped-def]
    unknown = "3f2b6c1e-0000-4000-8000-000000000000"
    error = rpc_error(lambda: stub.GetTask(pb.GetTaskRequest(uuid=unknown)))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in error.details()
    assert error_code(error) == "not_found"


def test_empty_request_is_invalid_argument(stub) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(lambda: stub.AddTask(pb.AddTaskRequest()))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in error.details()


def test_request_at_the_limit_is_accepted_and_over_it_resource_exhausted(stub) -> None:  # type: ignore[no-untyped-def]
    assert add(stub, b"x" * MAX_REQUEST_BYTES).created

    just_over = rpc_error(lambda: add(stub, b"y" * (MAX_REQUEST_BYTES + 1)))
    assert just_over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "SCHEDULER_MAX_REQUEST_BYTES" in just_over.details()
    assert error_code(just_over) == "too_large"

    # Far over: the transport's own limit refuses it before the scheduler sees it.
    far_over = rpc_error(lambda: add(stub, b"z" * (MAX_REQUEST_BYTES + 2 * 2**20)))
    assert far_over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    page = stub.FindTasks(pb.FindTasksRequest(), timeout=10)
    assert [item.request_size for item in page.items] == [MAX_REQUEST_BYTES]


def test_full_queue_is_resource_exhausted_but_a_duplicate_is_answered(
    start_server,
) -> None:  # type: ignore[no-untyped-def]
    stub = start_server(queue_size=1).stub
    first = add(stub, b"fills the queue")

    error = rpc_error(lambda: add(stub, b"one too many"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code(error) == "queue_full"
    assert dict(error.trailing_metadata())["retry-after"] == "5"

    assert add(stub, b"fills the queue").uuid == first.uuid


# --- FindTasks --------------------------------------------------------------------------


def find(stub, *operators: tuple[str, str, str], **page: object):  # type: ignore[no-untyped-def]
    request = pb.FindTasksRequest(
        operators=[
            pb.FindOperator(key=k, operator=o, value=v) for k, o, v in operators
        ],
        **page,
    )
    return stub.FindTasks(request, timeout=10)


def test_find_tasks_applies_every_operator(stub) -> None:  # type: ignore[no-untyped-def]
    small = add(stub, b"s").uuid
    medium = add(stub, b"mmmm").uuid
    large = add(stub, b"llllllll").uuid

    def uuids(*operators: tuple[str, str, str]) -> set[str]:
        return {item.uuid for item in find(stub, *operators).items}

    assert uuids(("status", "=", "queued")) == {small, medium, large}
    assert uuids(("status", "!=", "queued")) == set()
    assert uuids(("request_size", ">=", "4")) == {medium, large}
    assert uuids(("request_size", ">", "4"), ("request_size", "<=", "8")) == {large}
    assert uuids(("request_size", "<", "4")) == {small}
    assert uuids(("uuid", "in", f"{small},{large.upper()}")) == {small, large}
    assert uuids(("status", "in", "done,error")) == set()
    assert uuids(("created_at", ">=", "2000-01-01T00:00:00Z")) == {small, medium, large}


def test_find_tasks_pages_newest_first_until_no_next_cursor(stub) -> None:  # type: ignore[no-untyped-def]
    added = [add(stub, f"page item {n}".encode()).uuid for n in range(5)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = find(stub, limit=2, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += [item.uuid for item in page.items]
        if not page.HasField("next_cursor"):
            break
        cursor = page.next_cursor

    assert pages == 3
    assert seen == list(reversed(added))
    assert len(find(stub).items) == 5  # the default limit, 100, holds them all


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        (("colour", "=", "red"), "unknown find key"),
        (("status", "~", "queued"), "unknown find operator"),
        (("status", "=", "sleeping"), "not one of"),
        (("attempts", ">", "many"), "not an integer"),
        (("created_at", "<", "yesterday"), "not an ISO 8601 time"),
        (("status", "<", "done"), "does not apply"),
    ],
)
def test_bad_find_is_invalid_argument_naming_the_problem(
    stub, operator, message
) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(lambda: find(stub, operator))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert error_code(error) == "bad_request"


@pytest.mark.parametrize("page", [{"limit": 0}, {"limit": 1001}, {"cursor": "bogus"}])
def test_bad_limit_or_cursor_is_invalid_argument(stub, page) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(lambda: find(stub, **page))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- Retry ------------------------------------------------------------------------------


def test_retry_queues_a_failed_task_again_under_its_uuid(
    cluster: Cluster, stub
) -> None:  # type: ignore[no-untyped-def]
    cluster.start_worker(concurrency=1)
    request = task_request(fail="the input is upside down")
    uuid = add(stub, request).uuid
    wait_until(lambda: status_of(stub, uuid) == "error", 30, message="error")
    failed = stub.GetTask(pb.GetTaskRequest(uuid=uuid), timeout=10)
    assert failed.error == "RuntimeError: the input is upside down"

    retried = stub.Retry(pb.RetryRequest(uuid=uuid), timeout=10)

    assert retried.uuid == uuid
    assert retried.status in ("queued", "processing")
    assert retried.error == ""
    wait_until(lambda: status_of(stub, uuid) == "error", 30, message="error again")
    assert cluster.call_log.calls_per_hash() == {failed.hash: 2}


def test_retry_of_a_task_not_in_error_is_failed_precondition(stub) -> None:  # type: ignore[no-untyped-def]
    uuid = add(stub, b"still queued").uuid

    error = rpc_error(lambda: stub.Retry(pb.RetryRequest(uuid=uuid)))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "queued" in error.details()
    assert error_code(error) == "conflict"


def test_retry_of_an_unknown_or_malformed_uuid(stub) -> None:  # type: ignore[no-untyped-def]
    unknown = rpc_error(
        lambda: stub.Retry(pb.RetryRequest(uuid="3f2b6c1e-0000-4000-8000-000000000001"))
    )
    malformed = rpc_error(lambda: stub.Retry(pb.RetryRequest(uuid="42")))

    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- Close, Open, State, WaitDrained ------------------------------------------------------


def test_close_refuses_every_request_with_unavailable_until_open(stub) -> None:  # type: ignore[no-untyped-def]
    known = add(stub, b"accepted before the close").uuid

    closed = stub.Close(pb.CloseRequest(), timeout=10)
    assert closed.closed is True
    assert closed.state == "draining"
    assert closed.queued == 1

    for request in (b"new after the close", b"accepted before the close"):
        error = rpc_error(lambda request=request: add(stub, request))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_code(error) == "closed"
        assert dict(error.trailing_metadata())["retry-after"] == "30"
    assert status_of(stub, known) == "queued"

    opened = stub.Open(pb.OpenRequest(), timeout=10)
    assert opened.closed is False
    assert opened.state == "accepting"
    assert add(stub, b"new after the open").created


def test_state_reports_the_phase_and_counts(stub) -> None:  # type: ignore[no-untyped-def]
    add(stub, b"one")
    add(stub, b"two")

    state = stub.State(pb.StateRequest(), timeout=10)

    assert state.state == "accepting"
    assert state.closed is False
    assert (state.queued, state.processing) == (2, 0)
    assert state.num_workers == 2
    assert state.queue_size == 1000


def test_wait_drained_times_out_while_tasks_are_queued(stub) -> None:  # type: ignore[no-untyped-def]
    add(stub, b"nobody runs this")
    stub.Close(pb.CloseRequest(), timeout=10)
    try:
        started = time.monotonic()
        answer = stub.WaitDrained(pb.WaitDrainedRequest(timeout=0.5), timeout=10)
        assert answer.drained is False
        assert 0.4 < time.monotonic() - started < 5
    finally:
        stub.Open(pb.OpenRequest(), timeout=10)


def test_wait_drained_answers_true_once_the_worker_finished(
    cluster: Cluster, stub
) -> None:  # type: ignore[no-untyped-def]
    uuid = add(stub, task_request(id="drain me", sleep=1)).uuid
    stub.Close(pb.CloseRequest(), timeout=10)
    cluster.start_worker(concurrency=1)
    try:
        answer = stub.WaitDrained(pb.WaitDrainedRequest(timeout=60), timeout=70)
        assert answer.drained is True
        assert status_of(stub, uuid) == "done"
        assert stub.State(pb.StateRequest(), timeout=10).state == "drained"
    finally:
        stub.Open(pb.OpenRequest(), timeout=10)


@pytest.mark.parametrize("deadline", [1.0, 3.0])
@pytest.mark.parametrize("wait", [600.0, float("inf")])
def test_wait_drained_answers_well_before_the_callers_deadline(  # type: ignore[no-untyped-def]
    stub, deadline: float, wait: float
) -> None:
    add(stub, b"keeps it draining")
    stub.Close(pb.CloseRequest(), timeout=10)
    try:
        started = time.monotonic()
        answer = stub.WaitDrained(pb.WaitDrainedRequest(timeout=wait), timeout=deadline)
        assert answer.drained is False
        # With time to spare for a slow last look at the state: an answer 50 ms short
        # of the deadline was DEADLINE_EXCEEDED whenever that look took longer.
        assert time.monotonic() - started < deadline - 0.1
    finally:
        stub.Open(pb.OpenRequest(), timeout=10)


def test_negative_wait_is_invalid_argument(stub) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(lambda: stub.WaitDrained(pb.WaitDrainedRequest(timeout=-1)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- Reflection, health, shutdown, the database -----------------------------------------


def test_a_client_knowing_only_reflection_can_add_a_task(server) -> None:  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        pool = descriptor_pool.DescriptorPool(
            ProtoReflectionDescriptorDatabase(channel)
        )
        service = pool.FindServiceByName(SERVICE)
        assert {m.name for m in service.methods} == {
            "AddTask",
            "GetTask",
            "FindTasks",
            "Retry",
            "Close",
            "Open",
            "State",
            "WaitDrained",
        }
        method = service.methods_by_name["AddTask"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            f"/{SERVICE}/AddTask",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )

        answer = call(request_class(request=b"found by reflection"), timeout=10)

        assert answer.created is True and answer.status == "queued"
        assert status_of(server.stub, answer.uuid) == "queued"
    finally:
        channel.close()


def test_health_is_serving_for_the_server_and_the_service_even_closed(
    server, stub
) -> None:  # type: ignore[no-untyped-def]
    stub.Close(pb.CloseRequest(), timeout=10)
    try:
        for name in ("", SERVICE):
            answer = server.health.Check(
                health_pb2.HealthCheckRequest(service=name), timeout=5
            )
            assert answer.status == SERVING, name
    finally:
        stub.Open(pb.OpenRequest(), timeout=10)
    unknown = rpc_error(
        lambda: server.health.Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_sigterm_turns_health_not_serving_and_lets_a_call_in_flight_finish(
    start_server, stub
) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    add(server.stub, b"keeps the scheduler draining")
    server.stub.Close(pb.CloseRequest(), timeout=10)
    watch = server.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    assert next(watch).status == SERVING
    in_flight = server.stub.WaitDrained.future(
        pb.WaitDrainedRequest(timeout=2), timeout=30
    )
    time.sleep(0.3)

    server.process.send_signal(signal.SIGTERM)

    assert next(watch).status == NOT_SERVING
    watch.cancel()
    assert in_flight.result().drained is False
    assert server.process.wait(10) == 0
    assert "grpc: stopped" in server.log_tail()
    stub.Open(pb.OpenRequest(), timeout=10)


def test_health_follows_the_broker_and_calls_are_answered_meanwhile(
    start_server,
) -> None:  # type: ignore[no-untyped-def]
    broker = RedisServer()  # a free port, nothing listening yet
    try:
        server = start_server(broker_url=broker.url, serving=False)
        assert server.health_status() == NOT_SERVING
        assert server.health_status(SERVICE) == NOT_SERVING
        assert server.stub.State(pb.StateRequest(), timeout=10).state == "accepting"

        broker.start()

        wait_until(lambda: server.health_status() == SERVING, 10, message="SERVING")
        assert server.health_status(SERVICE) == SERVING
    finally:
        broker.stop()
        shutil.rmtree(broker.dir, ignore_errors=True)


def test_server_recovers_when_its_database_connections_are_dropped(
    server, stub
) -> None:  # type: ignore[no-untyped-def]
    uuid = add(stub, b"before the drop").uuid

    # What a PostgreSQL restart does to the server's open connections.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (terminated,) = cursor.fetchone()
    assert terminated >= 1

    assert status_of(stub, uuid) == "queued"
    assert add(stub, b"after the drop").created
    assert server.process.poll() is None


class RefuseWithoutToken(grpc.ServerInterceptor):
    """The shape of the authentication to come: a token, or the call is refused."""

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        if service_of(details.method) in OPEN_SERVICES:
            return continuation(details)
        if dict(details.invocation_metadata).get("authorization") != "Bearer open":
            return refusing_handler(Failure("unauthenticated", "send a token"))
        return continuation(details)


def test_an_interceptor_refuses_with_the_same_codes_and_leaves_health_open(
    scheduler,
) -> None:  # type: ignore[no-untyped-def]
    server = GrpcServer(
        scheduler,
        host="127.0.0.1",
        port=0,
        max_request_bytes=MAX_REQUEST_BYTES,
        interceptors=[RefuseWithoutToken()],
    )
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SchedulerStub(channel)
            error = rpc_error(lambda: stub.State(pb.StateRequest(), timeout=10))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_code(error) == "unauthenticated"

            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == SERVING
    finally:
        server.stop(1)
