"""Server interceptors: every Scheduler call is authorized, and its bytes decoded safely.

grpcio runs interceptors on the server's one polling thread, under its lock, before a
call reaches the thread pool, so nothing slow may happen in ``intercept_service``.
These interceptors therefore only wrap the handler: the work (a token looked up in the
database, a request counted against the rate limit, the request decoded) runs in the
pool, with the call. A refusal reaches the client through ``status.abort``, with the
same codes and trailing metadata as every other error. Health and reflection
(``OPEN_SERVICES``) need no token and are let through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from django.db import close_old_connections

from ..api.auth import authorize
from ..tokens import Scope
from .status import Failure, abort, failure_of

log = logging.getLogger(__name__)

OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
)

# The scope each RPC needs, as the HTTP routes declare theirs.
SCOPE_BY_RPC: dict[str, Scope] = {
    "AddTask": Scope.SUBMIT,
    "GetTask": Scope.READ,
    "FindTasks": Scope.READ,
    "State": Scope.READ,
    "WaitDrained": Scope.READ,
    "Retry": Scope.OPERATE,
    "Close": Scope.OPERATE,
    "Open": Scope.OPERATE,
}
# An RPC added to the Scheduler without a scope here needs the strongest one, so that a
# new method is never open by omission.
DEFAULT_SCOPE = Scope.OPERATE

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
Continuation = Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None]


def service_of(method: str) -> str:
    """``/scheduler.v1.Scheduler/AddTask`` -> ``scheduler.v1.Scheduler``."""
    return method.strip("/").split("/", 1)[0]


def rpc_of(method: str) -> str:
    """``/scheduler.v1.Scheduler/AddTask`` -> ``AddTask``."""
    return method.rsplit("/", 1)[-1]


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of ``authorization: Bearer TOKEN``, or ``None``."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _guarded(
    details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler | None
) -> bool:
    # Every Scheduler RPC is unary; a streaming handler is one of the open services.
    return (
        handler is not None
        and handler.unary_unary is not None
        and service_of(details.method) not in OPEN_SERVICES
    )


def _rewrap(
    handler: grpc.RpcMethodHandler,
    behaviour: Behaviour,
    request_deserializer: Callable[[bytes], Any] | None,
) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_deserializer,
        response_serializer=handler.response_serializer,
    )


class Authenticate(grpc.ServerInterceptor):
    """Asks ``api.auth.authorize`` with the call's bearer token and the RPC's scope."""

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if not _guarded(handler_call_details, handler):
            return handler
        assert handler is not None
        rpc = rpc_of(handler_call_details.method)
        scope = SCOPE_BY_RPC.get(rpc, DEFAULT_SCOPE)
        token = bearer_token(handler_call_details.invocation_metadata)
        behaviour: Behaviour = handler.unary_unary

        def authorize_then_call(request: Any, context: grpc.ServicerContext) -> Any:
            # A pool thread is not Django's: drop a connection that a database restart
            # broke before the token lookup uses it.
            close_old_connections()
            try:
                authorize(token, scope)
            except Exception as exc:
                failure = failure_of(exc)
                _log_refusal(rpc, failure, exc)
                close_old_connections()
                abort(context, failure)
            return behaviour(request, context)

        return _rewrap(handler, authorize_then_call, handler.request_deserializer)


class DecodeRequests(grpc.ServerInterceptor):
    """Bytes that are not the RPC's request message are INVALID_ARGUMENT.

    grpcio answers a request it cannot deserialize with INTERNAL, which says "our bug"
    about what is the client's; this decodes inside the call instead.
    """

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if not _guarded(handler_call_details, handler):
            return handler
        assert handler is not None
        deserialize = handler.request_deserializer
        if deserialize is None:
            return handler
        message = f"{rpc_of(handler_call_details.method)}Request"
        behaviour: Behaviour = handler.unary_unary

        def decode_then_call(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = deserialize(raw)
            except Exception:  # protobuf's DecodeError, or anything a decoder raises
                abort(
                    context,
                    Failure(
                        "bad_request",
                        f"the request is not a valid {message} message",
                    ),
                )
            return behaviour(request, context)

        return _rewrap(handler, decode_then_call, None)


def _log_refusal(rpc: str, failure: Failure, exc: Exception) -> None:
    extra = {"event": "grpc_refused", "rpc": rpc, "code": failure.code}
    if failure.code == "internal":
        log.error(
            "rpc %s: authorization failed unexpectedly", rpc, exc_info=exc, extra=extra
        )
    elif failure.code == "unavailable":
        log.warning(
            "rpc %s: authorization: %s; the next call reconnects", rpc, exc, extra=extra
        )
    else:
        log.debug("rpc %s: refused (%s): %s", rpc, failure.code, exc, extra=extra)


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """The interceptors of ``manage.py rungrpc``, outermost first.

    Authentication comes first, so that a caller without a token gets nothing decoded.
    With SCHEDULER_AUTH_REQUIRED off, ``authorize`` lets every call through.
    """
    return [Authenticate(), DecodeRequests()]
