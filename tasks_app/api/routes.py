"""The operations of the HTTP API, each a thin call into the Scheduler.

Every route declares the scope it needs (see ``auth``); every exception a route lets out
is answered by ``errors.response_for_exception``.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Status
from ninja.params.functions import Query

from .. import health
from ..errors import WrongStatus
from ..find import parse_uuid
from ..interfaces import UUID, Task, TaskStatus
from ..metrics import counters
from ..scheduler import Scheduler, get_scheduler
from . import errors, wait_bound
from .auth import Scope, requires
from .head import get_and_head
from .inputs import operators_from_query, read_request_body
from .schemas import AdmissionOut, ErrorOut, StateOut, TaskOut, TaskPageOut

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60
DEFAULT_FIND_LIMIT = 100
MAX_FIND_LIMIT = 1000
# ?wait polls the task's row: quickly at first, for short tasks, then less often.
WAIT_FIRST_POLL_SECONDS = 0.05
WAIT_MAX_POLL_SECONDS = 0.5

api = NinjaAPI(
    title="Task scheduler",
    version="1",
    description=(
        "Submit requests, follow their tasks, fetch results, and close or reopen the "
        'scheduler. Every error is JSON: {"error": CODE, "message": TEXT}. Every '
        "GET also answers HEAD: the same status and headers, with the same auth, "
        "and no body."
    ),
    urls_namespace="api",
)
errors.install(api)

_ERRORS: dict[int, Any] = {
    code: ErrorOut for code in (400, 401, 403, 404, 405, 409, 413, 429, 503)
}
_RAW_BODY = {
    "requestBody": {
        "required": True,
        "description": "the request: raw bytes, whatever the Content-Type",
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}
            }
        },
    }
}
_RAW_RESULT = {
    "responses": {
        200: {
            "description": "the result bytes",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}
                }
            },
        }
    }
}


def _scheduler() -> Scheduler:
    return get_scheduler()


# --- tasks ----------------------------------------------------------------------------


@api.post(
    "/tasks",
    response={201: AdmissionOut, 200: AdmissionOut, **_ERRORS},
    auth=requires(Scope.SUBMIT),
    openapi_extra=_RAW_BODY,
    summary="Submit a request",
    description="201 for a new task, 200 for the task that already has this request.",
    tags=["tasks"],
)
def add_task(request: HttpRequest) -> Status:
    scheduler = _scheduler()
    body = read_request_body(request, scheduler.max_request_bytes)
    admission = scheduler.add_task(body)
    return Status(
        201 if admission.created else 200, AdmissionOut.from_admission(admission)
    )


@get_and_head(
    api,
    "/tasks",
    response={200: TaskPageOut, **_ERRORS},
    auth=requires(Scope.READ),
    summary="Find tasks",
    description=(
        "Conditions as field=value, or field__ne, __lt, __lte, __gt, __gte, __in "
        "(comma-separated); all must hold. Newest first; follow `next` as `cursor`."
    ),
    tags=["tasks"],
)
def find_tasks(
    request: HttpRequest,
    limit: Annotated[int, Query(ge=1, le=MAX_FIND_LIMIT)] = DEFAULT_FIND_LIMIT,
    cursor: str | None = None,
) -> TaskPageOut:
    operators = operators_from_query(request.GET)
    page = _scheduler().find_tasks(operators, limit, cursor)
    return TaskPageOut.from_page(page)


@get_and_head(
    api,
    "/tasks/{uuid}",
    response={200: TaskOut, **_ERRORS},
    auth=requires(Scope.READ),
    summary="Read a task",
    description=(
        "With ?wait=N, holds the answer up to N seconds until done or error. Each "
        "server process holds a bounded number of waits at once (a quarter of its "
        "threads stays free for the probes); past that, a wait answers at once with "
        "the task as it stands, as one that ran out does: ask again."
    ),
    tags=["tasks"],
)
def get_task(
    request: HttpRequest,
    uuid: str,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)] = 0,
) -> TaskOut:
    scheduler = _scheduler()
    task = scheduler.get_task(UUID(uuid))
    if wait > 0 and not task.status.is_finished:
        with wait_bound.current().hold() as may_wait:
            if may_wait:
                task = _wait_until_finished(scheduler, task, wait)
            else:
                _note_wait_cut_short(task)
    return TaskOut.from_task(task)


def _note_wait_cut_short(task: Task) -> None:
    counters.count_wait_cut_short()
    log.debug(
        "wait for task %r answered at once: this process holds as many waits as "
        "it allows (%s)",
        task.uuid,
        wait_bound.current().max_waits,
        extra={"event": "wait_cut_short", "task_uuid": task.uuid},
    )


def _wait_until_finished(scheduler: Scheduler, task: Task, seconds: float) -> Task:
    deadline = time.monotonic() + seconds
    interval = WAIT_FIRST_POLL_SECONDS
    # A shutting-down process answers at once, so that the server's graceful timeout
    # is spent on finishing requests, not on holding them.
    while not task.status.is_finished and not health.is_shutting_down():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, WAIT_MAX_POLL_SECONDS)
        task = scheduler.get_task(task.uuid)
    return task


@get_and_head(
    api,
    "/tasks/{uuid}/result",
    response={200: None, **_ERRORS},
    auth=requires(Scope.READ),
    openapi_extra=_RAW_RESULT,
    summary="Fetch a task's result",
    description="The raw result bytes; 409 with the task's status when not done.",
    tags=["tasks"],
)
def get_result(request: HttpRequest, uuid: str) -> HttpResponse:
    normalised = parse_uuid(uuid)
    status, result = _scheduler().storage.get_result(normalised)
    if status != TaskStatus.DONE:
        raise WrongStatus(normalised, status.value, expected=TaskStatus.DONE.value)
    return HttpResponse(result or b"", content_type="application/octet-stream")


@api.post(
    "/tasks/{uuid}/retry",
    response={200: TaskOut, **_ERRORS},
    auth=requires(Scope.OPERATE),
    summary="Retry a task in error",
    description="Queues it again under the same UUID; 409 unless it is in error.",
    tags=["tasks"],
)
def retry_task(request: HttpRequest, uuid: str) -> TaskOut:
    return TaskOut.from_task(_scheduler().retry(UUID(uuid)))


# --- the scheduler --------------------------------------------------------------------


@get_and_head(
    api,
    "/scheduler",
    response={200: StateOut, **_ERRORS},
    auth=requires(Scope.READ),
    summary="The scheduler's state",
    tags=["scheduler"],
)
def scheduler_state(request: HttpRequest) -> StateOut:
    return StateOut.from_state(_scheduler().state())


@api.post(
    "/scheduler/close",
    response={200: StateOut, **_ERRORS},
    auth=requires(Scope.OPERATE),
    summary="Close the scheduler",
    description="Every replica refuses new requests; accepted tasks still run.",
    tags=["scheduler"],
)
def close_scheduler(request: HttpRequest) -> StateOut:
    return StateOut.from_state(_scheduler().close())


@api.post(
    "/scheduler/open",
    response={200: StateOut, **_ERRORS},
    auth=requires(Scope.OPERATE),
    summary="Reopen the scheduler",
    tags=["scheduler"],
)
def open_scheduler(request: HttpRequest) -> StateOut:
    return StateOut.from_state(_scheduler().open())
