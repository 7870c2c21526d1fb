"""The JSON shapes of the API; times are ISO 8601 in UTC, to the microsecond."""

from __future__ import annotations

import datetime as dt

from ninja import Schema
from pydantic import field_serializer

from ..admission import Admission
from ..interfaces import SchedulerPhase, State, Task, TaskPage, TaskStatus


def iso_utc(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class ErrorOut(Schema):
    error: str
    message: str
    status: TaskStatus | None = None


class AdmissionOut(Schema):
    uuid: str
    status: TaskStatus
    created: bool

    @classmethod
    def from_admission(cls, admission: Admission) -> AdmissionOut:
        return cls(
            uuid=admission.uuid, status=admission.status, created=admission.created
        )


class TaskOut(Schema):
    """A task without its bytes; ``result_size`` is null until there is a result."""

    uuid: str
    hash: str
    status: TaskStatus
    error: str
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    request_size: int
    result_size: int | None
    worker: str

    @field_serializer("created_at", "started_at", "finished_at")
    def _serialize_time(self, value: dt.datetime | None) -> str | None:
        return iso_utc(value)

    @classmethod
    def from_task(cls, task: Task) -> TaskOut:
        return cls(
            uuid=task.uuid,
            hash=task.hash,
            status=task.status,
            error=task.error,
            attempts=task.attempts,
            created_at=task.created_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            request_size=task.request_size,
            result_size=task.result_size,
            worker=task.worker,
        )


class TaskPageOut(Schema):
    items: list[TaskOut]
    next: str | None

    @classmethod
    def from_page(cls, page: TaskPage) -> TaskPageOut:
        return cls(
            items=[TaskOut.from_task(task) for task in page.items],
            next=page.next_cursor,
        )


class StateOut(Schema):
    state: SchedulerPhase
    closed: bool
    queued: int
    processing: int
    num_workers: int
    queue_size: int

    @classmethod
    def from_state(cls, state: State) -> StateOut:
        return cls(
            state=state.state,
            closed=state.closed,
            queued=state.queued,
            processing=state.processing,
            num_workers=state.num_workers,
            queue_size=state.queue_size,
        )
