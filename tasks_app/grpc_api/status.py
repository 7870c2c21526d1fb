"""Exceptions to gRPC status codes, in one place, mirroring the HTTP API's error codes.

A failed call carries the HTTP API's error code in the trailing metadata ``error-code``
(``queue_full``, ``closed``...) and, when trying again later can help, ``retry-after``
in seconds, so that a client can tell apart what one gRPC code covers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from django.db import InterfaceError, OperationalError

from ..errors import Refused, SchedulerError

log = logging.getLogger(__name__)

# The codes of tasks_app.errors (and of authentication, which uses the same words).
STATUS_CODES: dict[str, grpc.StatusCode] = {
    "bad_request": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.FAILED_PRECONDITION,
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_many_waits": grpc.StatusCode.RESOURCE_EXHAUSTED,  # gRPC's own: see waits
    "closed": grpc.StatusCode.UNAVAILABLE,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "internal": grpc.StatusCode.INTERNAL,
}

DATABASE_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class Failure:
    """What a client is told about an exception."""

    code: str
    message: str
    retry_after_seconds: int | None = None

    @property
    def status_code(self) -> grpc.StatusCode:
        return STATUS_CODES.get(self.code, grpc.StatusCode.INTERNAL)

    @property
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = [("error-code", self.code)]
        if self.retry_after_seconds is not None:
            metadata.append(("retry-after", str(self.retry_after_seconds)))
        return tuple(metadata)


def failure_of(exc: BaseException) -> Failure:
    """The client's view of ``exc``: the contract's code, and no internals."""
    if isinstance(exc, SchedulerError):
        retry_after = exc.retry_after_seconds if isinstance(exc, Refused) else None
        return Failure(exc.code, str(exc), retry_after)
    # The contract's plain errors: a bad Find is a ValueError, an unknown task a
    # LookupError, whoever raises them.
    if isinstance(exc, LookupError):
        return Failure("not_found", str(exc) or "not found")
    if isinstance(exc, ValueError):
        return Failure("bad_request", str(exc) or "bad request")
    if isinstance(exc, OperationalError | InterfaceError):
        # A restart or failover of PostgreSQL: the connection is dropped after the call
        # and the next one reconnects, so trying again soon is the right advice.
        return Failure(
            "unavailable",
            "the database is unavailable; try again shortly",
            DATABASE_RETRY_AFTER_SECONDS,
        )
    return Failure("internal", "internal error; the server log has the details")


def abort(context: grpc.ServicerContext, failure: Failure) -> NoReturn:
    context.set_trailing_metadata(failure.trailing_metadata)
    context.abort(failure.status_code, failure.message)
    raise AssertionError("grpc.ServicerContext.abort returned")  # it always raises


def refusing_handler(failure: Failure) -> grpc.RpcMethodHandler:
    """A handler that answers every call with ``failure``.

    For interceptors (authentication) that decide before the Scheduler is called: return
    this instead of continuing, and the client sees the same codes and metadata.
    """

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        abort(context, failure)

    return grpc.unary_unary_rpc_method_handler(refuse)
