"""What a request carries: its raw body, and the find operators of its query string."""

from __future__ import annotations

from django.http import HttpRequest, QueryDict

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


def read_request_body(request: HttpRequest, max_request_bytes: int) -> bytes:
    """The raw body, refused by its declared size before a byte of it is read."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared:
        if request.META.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            # Django reads no chunked body under WSGI: it would look empty.
            raise BadRequest("send the request with a Content-Length, not chunked")
        return b""
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
