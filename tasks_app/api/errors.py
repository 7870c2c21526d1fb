"""Exceptions to HTTP answers, in one place: every error is ``{"error", "message"}``.

The ninja handler, the middleware that answers unrouted paths and wrong methods, and
the probes all build their error bodies here, so a code always means one status.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import HttpError, Throttled, ValidationError

from ..errors import CODE_BY_HTTP_STATUS, Refused, SchedulerError, WrongStatus

log = logging.getLogger(__name__)

# The longest message of Django's own taken into an answer: some echo the input.
MAX_MESSAGE_CHARS = 200

STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "queue_full": 429,
    "rate_limited": 429,
    "closed": 503,
}


def error_response(
    code: str,
    message: str,
    *,
    http_status: int | None = None,
    retry_after_seconds: float | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> JsonResponse:
    body: dict[str, Any] = {"error": code, "message": message, **fields}
    response = JsonResponse(body, status=http_status or STATUS_BY_CODE[code])
    for name, value in (headers or {}).items():
        response[name] = value
    if retry_after_seconds is not None:
        response["Retry-After"] = str(max(1, math.ceil(retry_after_seconds)))
    return response


def response_for_exception(exc: Exception) -> JsonResponse:
    """The answer to an exception raised while serving an API request."""
    if isinstance(exc, SchedulerError):
        return _scheduler_error(exc)
    if isinstance(exc, ValidationError):
        return error_response("bad_request", _validation_message(exc))
    if isinstance(exc, RequestDataTooBig):
        # Django answers its own upload limit with 400; a body too large is 413.
        return error_response(
            "too_large",
            "the request is over the upload limit (DATA_UPLOAD_MAX_MEMORY_SIZE)",
        )
    if isinstance(exc, (SuspiciousOperation, BadRequest)):
        # What Django refuses while parsing a request (too many fields, a bad Host)
        # is the client's to fix, not the server's failure.
        return error_response("bad_request", _djangos_message(exc))
    if isinstance(exc, Http404):
        return error_response("not_found", str(exc) or "not found")
    if isinstance(exc, Throttled):
        return error_response(
            "rate_limited",
            "too many requests; slow down",
            retry_after_seconds=exc.wait if exc.wait is not None else 1,
        )
    if isinstance(exc, HttpError):
        code = CODE_BY_HTTP_STATUS.get(exc.status_code, "bad_request")
        return error_response(code, exc.message, http_status=exc.status_code)
    log.error(
        "unexpected %s while serving an API request",
        type(exc).__name__,
        exc_info=exc,
        extra={"event": "api_internal_error"},
    )
    return error_response(
        "internal", "the server failed; the error is logged", http_status=500
    )


def _scheduler_error(exc: SchedulerError) -> JsonResponse:
    http_status = STATUS_BY_CODE.get(exc.code, 400)
    fields: dict[str, Any] = {}
    if isinstance(exc, WrongStatus):
        fields["status"] = exc.status
    retry_after = exc.retry_after_seconds if isinstance(exc, Refused) else None
    # RFC 9110: a 401 names the scheme that would be accepted.
    headers = {"WWW-Authenticate": "Bearer"} if http_status == 401 else None
    return error_response(
        exc.code,
        str(exc),
        http_status=http_status,
        retry_after_seconds=retry_after,
        headers=headers,
        **fields,
    )


def _djangos_message(exc: Exception) -> str:
    message = str(exc) or "the request is malformed"
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}..."


def bad_request_view(
    request: HttpRequest, exception: Exception | None = None
) -> HttpResponse:
    """Django's ``handler400``: its own 400s (SuspiciousOperation, BadRequest) in JSON.

    Django calls it with DEBUG off only; with DEBUG on it answers its debug page. It
    must not ask ``request.get_host()``: a bad Host is one of the things that got here.
    """
    if isinstance(exception, (SuspiciousOperation, BadRequest)):
        # RequestDataTooBig among them, which the contract answers with 413.
        return response_for_exception(exception)
    # A MultiPartParserError, or no exception at all.
    return error_response("bad_request", _djangos_message(exception or BadRequest()))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors:
        # ninja prefixes the location with where it came from ("query", "path").
        location = [str(part) for part in error.get("loc", ())][1:]
        parts.append(
            f"{'.'.join(location) or 'request'}: {error.get('msg', 'invalid')}"
        )
    return "; ".join(parts) or "the request is invalid"


def install(api: NinjaAPI) -> None:
    """Route every exception of ``api``'s operations through ``response_for_exception``."""

    def handle(request: HttpRequest, exc: Exception | type[Exception]) -> HttpResponse:
        # ninja's signature admits an exception class; it only ever passes instances.
        return response_for_exception(exc if isinstance(exc, Exception) else exc())

    # ninja registers its own handlers for these; the most specific class wins its
    # lookup, so each one is replaced, not only the catch-all.
    for exc_class in (Exception, Http404, HttpError, ValidationError):
        api.add_exception_handler(exc_class, handle)
