"""WaitDrained calls cannot wedge `manage.py rungrpc`: what a tester found, as tests.

Ten waits with no deadline on a scheduler that is not drained, cancelled by their
clients, used to hold every one of the server's threads for ever: State and health
timed out, and SIGTERM left the process alive. Each test here failed on that code.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tasks_app.grpc_api.generated import scheduler_pb2 as pb
from tasks_app.grpc_api.server import DEFAULT_THREADS, GrpcServer
from tasks_app.scheduler import Scheduler
from tests.harness import RedisServer, wait_until
from tests.test_grpc import SERVICE, SERVING, GrpcServerProcess, error_code

pytestmark = pytest.mark.django_db(transaction=True)

# More waits than the server has threads: the tester's ten, and two more.
WAITS = DEFAULT_THREADS + 2
GRACE_SECONDS = 5  # what GrpcServerProcess passes to --grace


@pytest.fixture
def draining_server(
    live_database_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[GrpcServerProcess]:
    """A server of the test's own, on a scheduler closed with a task nobody runs."""
    server = GrpcServerProcess(live_database_url, redis_server.url, tmp_path)
    try:
        server.wait_ready()
        server.stub.AddTask(pb.AddTaskRequest(request=b"nobody runs this"), timeout=10)
        server.stub.Close(pb.CloseRequest(), timeout=10)
        yield server
    finally:
        server.stop()


def start_waits(server: GrpcServerProcess, count: int = WAITS) -> list[grpc.Future]:
    """``count`` waits with no timeout and no deadline, given a moment to arrive."""
    waits = [
        server.stub.WaitDrained.future(pb.WaitDrainedRequest(timeout=float("inf")))
        for _ in range(count)
    ]
    time.sleep(1)
    return waits


def refusals(waits: list[grpc.Future]) -> list[grpc.RpcError]:
    """The waits that have ended; each must be a refusal for too many waits."""
    ended = [wait.exception() for wait in waits if wait.done()]
    for error in ended:
        assert isinstance(error, grpc.RpcError)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert error_code(error) == "too_many_waits"
    return ended


def assert_state_and_health_answer(server: GrpcServerProcess) -> None:
    started = time.monotonic()
    assert server.stub.State(pb.StateRequest(), timeout=2).state == "draining"
    for name in ("", SERVICE):
        assert server.health_status(name) == SERVING, name
    assert time.monotonic() - started < 2


def ended_waits_logged(server: GrpcServerProcess) -> int:
    return server.log_path.read_text(errors="replace").count("rpc WaitDrained: ended")


def test_waits_beyond_the_thread_count_are_refused_and_state_still_answers(
    draining_server: GrpcServerProcess,
) -> None:
    waits = start_waits(draining_server)
    try:
        refused = refusals(waits)
        assert refused, "every wait was let in: nothing is left for other calls"
        assert "waits" in (refused[0].details() or "")
        assert_state_and_health_answer(draining_server)
    finally:
        for wait in waits:
            wait.cancel()


def test_state_and_health_answer_at_once_after_the_waits_are_cancelled(
    draining_server: GrpcServerProcess,
) -> None:
    waits = start_waits(draining_server)

    for wait in waits:
        wait.cancel()

    assert_state_and_health_answer(draining_server)


def test_a_cancelled_wait_frees_its_server_thread_within_a_poll(
    draining_server: GrpcServerProcess,
) -> None:
    waits = start_waits(draining_server)
    pending = [wait for wait in waits if not wait.done()]
    assert pending
    before = ended_waits_logged(draining_server)

    for wait in pending:
        wait.cancel()

    # The server logs the end of each call once its thread is back in the pool.
    wait_until(
        lambda: ended_waits_logged(draining_server) == before + len(pending),
        timeout=1.5,
        interval=0.05,
        message=f"{len(pending)} cancelled waits to end on the server",
    )
    # Room for as many waits as before, none refused for those that were cancelled.
    again = start_waits(draining_server, len(pending))
    try:
        assert refusals(again) == []
    finally:
        for wait in again:
            wait.cancel()


def test_sigterm_ends_the_process_within_its_grace_with_waits_pending(
    draining_server: GrpcServerProcess,
) -> None:
    waits = start_waits(draining_server)
    pending = [wait for wait in waits if not wait.done()]
    assert len(refusals(waits)) + len(pending) == WAITS
    started = time.monotonic()

    draining_server.process.send_signal(signal.SIGTERM)

    assert draining_server.process.wait(GRACE_SECONDS + 3) == 0
    assert time.monotonic() - started < GRACE_SECONDS + 1
    # The waits let in answer before the grace runs out: not drained, as it stands.
    assert [wait.result().drained for wait in pending] == [False] * len(pending)
    assert "grpc: stopped" in draining_server.log_tail()


def test_wait_drained_in_python_ends_when_its_stop_event_is_set(
    scheduler: Scheduler,
) -> None:
    scheduler.add_task(b"nobody runs this")
    scheduler.close()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()

    assert scheduler.wait_drained(float("inf"), stop=stop) is False

    assert time.monotonic() - started < 1


def test_wait_drained_in_python_needs_no_stop_event(scheduler: Scheduler) -> None:
    scheduler.close()

    assert scheduler.wait_drained(float("inf")) is True
    assert scheduler.wait_drained(0) is True


def test_a_server_with_fewer_than_two_threads_is_refused(scheduler: Scheduler) -> None:
    with pytest.raises(ValueError, match="at least 2 threads"):
        GrpcServer(scheduler, port=0, threads=1, max_request_bytes=1024)
