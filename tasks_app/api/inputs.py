"""What a request carries: its raw body, and the find operators of its query string."""

from __future__ import annotations

import io
from typing import BinaryIO

from django.http import HttpRequest, QueryDict
from gunicorn.http.errors import ParseException

from ..admission import refuse_oversized
from ..errors import BadRequest, shown
from ..interfaces import FindOperator

# ``field__suffix=value`` in a query string, to the operators of FindOperator.
OPERATOR_BY_SUFFIX = {
    "": "=",
    "ne": "!=",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "in": "in",
}
# Query parameters of the Find route that are not conditions.
PAGING_PARAMETERS = frozenset({"limit", "cursor"})
# How much of a chunked body one read asks the server for.
CHUNKED_READ_BYTES = 256 * 1024


def read_request_body(request: HttpRequest, max_request_bytes: int) -> bytes:
    """The raw body, refused as too large before more than the limit of it is read.

    A body with a Content-Length is refused by its declared size before a byte of it
    is read; a chunked one once a byte past the limit has arrived.
    """
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared:
        return _read_declared_body(request, declared, max_request_bytes)
    transfer_encoding = request.META.get("HTTP_TRANSFER_ENCODING", "")
    if transfer_encoding:
        return _read_chunked_body(request, transfer_encoding, max_request_bytes)
    return b""


def _read_declared_body(
    request: HttpRequest, declared: str, max_request_bytes: int
) -> bytes:
    try:
        size = int(declared)
    except ValueError:
        raise BadRequest(f"Content-Length {declared[:40]!r} is not a number") from None
    if size < 0:
        raise BadRequest(f"Content-Length {size} is negative")
    refuse_oversized(size, max_request_bytes)
    body = request.body
    if len(body) != size:
        # The client gave up or was cut off: admitting the part that arrived would
        # queue a request nobody sent, and its full re-send as a second task.
        raise BadRequest(
            f"the body ended after {len(body)} of its {size} declared bytes; "
            "send the whole request again"
        )
    return body


def _read_chunked_body(
    request: HttpRequest, transfer_encoding: str, max_request_bytes: int
) -> bytes:
    codings = [coding.strip().lower() for coding in transfer_encoding.split(",")]
    if codings != ["chunked"]:
        # gunicorn takes the chunks off "gzip, chunked" but leaves the gzip: the
        # bytes that reach us would not be the request the client meant.
        raise BadRequest(
            f"Transfer-Encoding {shown(transfer_encoding)} is not decoded here; send "
            "the request chunked alone, or with a Content-Length"
        )
    # Without a Content-Length, Django gives a view an empty body. A server that
    # decodes the chunks itself and ends wsgi.input where the body ends says so with
    # this flag (gunicorn does); without it (Django's runserver) the stream cannot be
    # read safely, and the client is told how to send instead.
    if not request.META.get("wsgi.input_terminated"):
        raise BadRequest(
            "this server does not decode chunked bodies; send the request with a "
            "Content-Length"
        )
    received = _read_at_most(request.META["wsgi.input"], max_request_bytes + 1)
    refuse_oversized(len(received), max_request_bytes, at_least=True)
    return received


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """What ``stream`` holds, or its first ``limit`` bytes if it holds more."""
    # BytesIO hands back its own buffer, so a body near the limit is held once, not
    # twice as a list of pieces and their join would be.
    received = io.BytesIO()
    try:
        while received.tell() < limit:
            piece = stream.read(min(CHUNKED_READ_BYTES, limit - received.tell()))
            if not piece:
                break
            received.write(piece)
    except (OSError, ParseException) as exc:
        # gunicorn decodes the chunks as they are read, so bad framing, or a client
        # that stops before the last chunk, is raised here, in the view: the client's
        # fault, a 400, never the 500 of an unexpected exception.
        raise BadRequest(
            f"the chunked body is malformed or ended before its last chunk "
            f"({type(exc).__name__}); send the whole request again"
        ) from exc
    return received.getvalue()


def operators_from_query(query: QueryDict) -> list[FindOperator]:
    """``status=done&attempts__gte=2`` as find operators; all of them must hold."""
    operators: list[FindOperator] = []
    for name, values in query.lists():
        if name in PAGING_PARAMETERS:
            continue
        key, separator, suffix = name.partition("__")
        if suffix not in OPERATOR_BY_SUFFIX or (separator and not suffix):
            known = ", ".join(f"__{s}" for s in OPERATOR_BY_SUFFIX if s)
            raise BadRequest(
                f"unknown find operator {shown(suffix)} in {shown(name)}; known: "
                f"{known}"
            )
        operators.extend(
            FindOperator(key, OPERATOR_BY_SUFFIX[suffix], value) for value in values
        )
    return operators
