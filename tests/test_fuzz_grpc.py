"""Hypothesis against a live ``manage.py rungrpc`` with the production settings.

Random requests, fields, find operators, UUIDs, credentials and raw bytes: every call
answers OK or one of the contract's codes, never UNKNOWN or INTERNAL, and every task
that was accepted is still readable, with the hash of what was sent, afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_app.find import FIND_KEYS, FIND_OPERATORS
from tasks_app.grpc_api.generated import scheduler_pb2 as pb
from tasks_app.tokens import Scope, create_token
from tests.harness import RedisServer
from tests.live_servers import Rungrpc, production_env

MAX_REQUEST_BYTES = 4096
QUEUE_SIZE = 40
SERVICE = "/scheduler.v1.Scheduler"
Code = grpc.StatusCode
# What a call may answer; UNIMPLEMENTED only for a method the service does not have.
EXPECTED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
}


@pytest.fixture(scope="module")
def server(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rungrpc]:
    workdir = tmp_path_factory.mktemp("grpc-fuzz")
    env = production_env(
        live_database_url,
        redis_server.url,
        workdir,
        max_request_bytes=MAX_REQUEST_BYTES,
        queue_size=QUEUE_SIZE,
        rate_limit="off",
    )
    process = Rungrpc(env, workdir)
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@dataclass
class Session:
    """The tokens of one test, and what the server accepted along the way."""

    tokens: dict[str, str]
    accepted: dict[str, bytes] = field(default_factory=dict)


printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
credentials = st.one_of(
    st.sampled_from(["full", "read", "submit", "none"]),
    printable.map(lambda text: f"raw:{text}"),
)
uuid_text = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.text(max_size=40),
    st.sampled_from(["", " ", "not-a-uuid", "00000000-0000-0000-0000-000000000000"]),
)
find_operators = st.lists(
    st.builds(
        pb.FindOperator,
        key=st.one_of(st.sampled_from(FIND_KEYS), st.text(max_size=10)),
        operator=st.one_of(st.sampled_from(FIND_OPERATORS), st.text(max_size=3)),
        value=st.one_of(
            st.text(max_size=40),
            st.integers(-(2**70), 2**70).map(str),
            st.datetimes().map(lambda d: d.isoformat()),
            st.sampled_from(["queued", "done", "error,queued", "\x00", ""]),
        ),
    ),
    max_size=4,
)
calls = st.one_of(
    st.tuples(
        st.just("AddTask"),
        st.builds(
            pb.AddTaskRequest,
            request=st.one_of(
                st.binary(max_size=300),
                st.binary(min_size=MAX_REQUEST_BYTES, max_size=MAX_REQUEST_BYTES + 2),
            ),
        ),
    ),
    st.tuples(st.just("GetTask"), st.builds(pb.GetTaskRequest, uuid=uuid_text)),
    st.tuples(st.just("Retry"), st.builds(pb.RetryRequest, uuid=uuid_text)),
    st.tuples(
        st.just("FindTasks"),
        st.builds(
            pb.FindTasksRequest,
            operators=find_operators,
            limit=st.none() | st.integers(-(2**63), 2**63 - 1),
            cursor=st.none() | st.text(max_size=60),
        ),
    ),
    st.tuples(
        st.just("WaitDrained"),
        st.builds(
            pb.WaitDrainedRequest,
            timeout=st.one_of(
                st.floats(max_value=0.05, allow_infinity=False),
                st.just(float("-inf")),
                st.just(float("nan")),
            ),
        ),
    ),
    st.tuples(
        st.sampled_from(["State", "Close", "Open"]),
        st.just(None),
    ),
    st.tuples(
        st.sampled_from(["AddTask", "GetTask", "FindTasks", "Retry", "WaitDrained"]),
        st.binary(max_size=200).map(lambda raw: ("raw", raw)),
    ),
)


def metadata_for(session: Session, credential: str) -> list[tuple[str, str]]:
    if credential == "none":
        return []
    if credential.startswith("raw:"):
        return [("authorization", credential[4:])]
    return [("authorization", f"Bearer {session.tokens[credential]}")]


REQUEST_CLASS = {
    "State": pb.StateRequest,
    "Close": pb.CloseRequest,
    "Open": pb.OpenRequest,
}


def invoke(
    server: Rungrpc, rpc: str, request: Any, metadata: list[tuple[str, str]]
) -> tuple[Code, Any, str]:
    """(code, response or None, error-code metadata) of one call."""
    if isinstance(request, tuple):  # raw bytes, past the client's serializer
        method = server.channel.unary_unary(f"{SERVICE}/{rpc}")
        call, argument = method, request[1]
    else:
        call = getattr(server.stub, rpc)
        argument = request if request is not None else REQUEST_CLASS[rpc]()
    try:
        response = call(argument, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        trailing = dict(error.trailing_metadata() or ())
        return error.code(), None, trailing.get("error-code", "")
    return Code.OK, response, ""


def check_answer(
    session: Session, rpc: str, request: Any, credential: str, answer: tuple[Any, ...]
) -> None:
    code, response, error_code = answer
    assert code in EXPECTED, (rpc, request, credential, code)
    if credential == "none" or credential.startswith("raw:"):
        # No token we issued: refused before anything else, bytes included.
        assert code == Code.UNAUTHENTICATED, (rpc, credential, code)
        return
    if code == Code.UNAVAILABLE:
        assert error_code in ("closed", "unavailable"), error_code
    if code != Code.OK:
        assert error_code, (rpc, code)
    if rpc == "AddTask" and code == Code.OK and not isinstance(request, tuple):
        session.accepted[response.uuid] = request.request


def full_token_call(server: Rungrpc, session: Session, rpc: str, request: Any) -> Any:
    return getattr(server.stub, rpc)(
        request, timeout=10, metadata=metadata_for(session, "full")
    )


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(calls, credentials), min_size=1, max_size=15))
def test_random_calls_answer_only_expected_codes_and_lose_no_accepted_task(
    server: Rungrpc, sequence: list[tuple[tuple[str, Any], str]]
) -> None:
    session = Session(
        tokens={
            "full": create_token(tuple(Scope), name="fuzz")[1],
            "read": create_token([Scope.READ], name="fuzz")[1],
            "submit": create_token([Scope.SUBMIT], name="fuzz")[1],
        }
    )

    for (rpc, request), credential in sequence:
        answer = invoke(server, rpc, request, metadata_for(session, credential))
        check_answer(session, rpc, request, credential, answer)

    full_token_call(server, session, "Open", pb.OpenRequest())
    for uuid, sent in session.accepted.items():
        task = full_token_call(server, session, "GetTask", pb.GetTaskRequest(uuid=uuid))
        assert task.hash == hashlib.sha256(sent).hexdigest()


@settings(max_examples=30, deadline=None)
@given(method=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30))
def test_an_unknown_method_is_unimplemented_not_internal(
    server: Rungrpc, method: str
) -> None:
    call = server.channel.unary_unary(f"{SERVICE}/{method}Nope")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=10)
    assert caught.value.code() == Code.UNIMPLEMENTED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("timeout", [float("nan"), float("-inf"), -1.0])
def test_a_wait_drained_timeout_that_is_no_duration_is_invalid_at_once(
    server: Rungrpc, timeout: float
) -> None:
    """Found by the fuzz: NaN never timed out, and ten such calls took every thread."""
    token = create_token([Scope.READ], name="fuzz")[1]
    request = pb.WaitDrainedRequest(timeout=timeout)

    code, _, error_code = invoke(
        server, "WaitDrained", request, [("authorization", f"Bearer {token}")]
    )

    assert (code, error_code) == (Code.INVALID_ARGUMENT, "bad_request")
