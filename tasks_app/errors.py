"""The exceptions of the scheduler; the HTTP and gRPC layers map them to codes in one place."""

from __future__ import annotations

# The error code of an HTTP status that no SchedulerError chose: Django's and ninja's
# own refusals, and gunicorn's (gunicorn.conf.py). Any other 4xx is ``bad_request``.
CODE_BY_HTTP_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "closed",
}

MAX_SHOWN_CHARS = 80


def shown(value: object) -> str:
    """``repr(value)`` for an error message, cut short: input is named, not sent back."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}... ({len(text)} characters)"


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose."""

    code = "bad_request"


class BadRequest(SchedulerError, ValueError):
    """The request is malformed: fix the input named in the message and send it again."""

    code = "bad_request"


class EmptyRequest(BadRequest):
    """The request has no bytes; the processor needs something to work on."""


class RequestTooLarge(SchedulerError):
    """The request is over SCHEDULER_MAX_REQUEST_BYTES; send less, or raise the limit."""

    code = "too_large"

    def __init__(self, size: int, limit: int, *, at_least: bool = False) -> None:
        # ``at_least``: a body refused while it streams in is known only to pass ``size``.
        super().__init__(
            f"request of {'at least ' if at_least else ''}{size} bytes is over the "
            f"limit of {limit} bytes (SCHEDULER_MAX_REQUEST_BYTES)"
        )
        self.size = size
        self.limit = limit


class TaskNotFound(SchedulerError, LookupError):
    """No task has this UUID."""

    code = "not_found"

    def __init__(self, uuid: str) -> None:
        super().__init__(f"no task has UUID {uuid}")
        self.uuid = uuid


class WrongStatus(SchedulerError):
    """The task is not in the status this call needs; read it again and decide."""

    code = "conflict"

    def __init__(self, uuid: str, status: str, expected: str) -> None:
        super().__init__(f"task {uuid} is {status}, not {expected}")
        self.uuid = uuid
        self.status = status


class Refused(SchedulerError):
    """The scheduler did not admit the request; try again after ``retry_after_seconds``."""

    retry_after_seconds = 5


class SchedulerClosed(Refused):
    """The scheduler is closed: it refuses new requests while it finishes what it accepted."""

    code = "closed"
    retry_after_seconds = 30

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "the scheduler is closed and accepts no new requests; "
            "try again once an operator reopens it"
        )


class QueueFull(Refused):
    """The queue holds SCHEDULER_QUEUE_SIZE queued tasks already; try again later."""

    code = "queue_full"
    retry_after_seconds = 5

    def __init__(self, queue_size: int) -> None:
        super().__init__(
            f"the queue is full ({queue_size} tasks queued, SCHEDULER_QUEUE_SIZE); "
            "try again when some have started"
        )
        self.queue_size = queue_size
