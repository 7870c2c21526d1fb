"""The fixed interfaces of the task statement, rendered in Python.

This module imports neither Django nor Celery: a processor author depends on it alone.
The method signatures of ``Processor`` and ``Storage`` are part of the public contract
and never change; our own storage adds methods beside them.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import NewType, Protocol, TypeVar, runtime_checkable

UUID = NewType("UUID", str)
"""A task's identifier: lowercase and hyphenated."""


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    ERROR = "error"

    @property
    def is_finished(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.ERROR)


@dataclass(frozen=True, slots=True)
class FindOperator:
    """One condition of a Find: ``key operator value``, such as ``status = done``."""

    key: str
    operator: str
    value: str


@runtime_checkable
class Processor(Protocol):
    """The user's code that turns a request into a result; failure is an exception."""

    def process(self, data: bytes) -> bytes: ...


T = TypeVar("T")


class Storage(Protocol[T]):
    """Create/update, lookup by primary key, and selection by criteria."""

    def store(self, item: T) -> UUID:
        """Create ``item``, or update the record that has its UUID."""
        ...

    def get(self, uuid: UUID) -> T:
        """Return the record, or raise a ``LookupError``."""
        ...

    def find(self, operators: list[FindOperator]) -> list[T]:
        """Return every record for which all ``operators`` hold."""
        ...


@dataclass(frozen=True, slots=True)
class Task:
    """One request and its processing.

    ``request`` and ``result`` are ``None`` when a query chose not to load the bytes
    (pages of a Find); ``request_size`` and ``result_size`` are always filled.
    """

    uuid: UUID
    hash: str
    status: TaskStatus
    request: bytes | None
    result: bytes | None
    error: str
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    request_size: int
    result_size: int | None
    worker: str

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class SchedulerPhase(enum.StrEnum):
    ACCEPTING = "accepting"
    DRAINING = "draining"
    DRAINED = "drained"


@dataclass(frozen=True, slots=True)
class State:
    """What ``Scheduler.state()`` reports, the same on every replica but ``closed``."""

    state: SchedulerPhase
    closed: bool
    queued: int
    processing: int
    num_workers: int
    queue_size: int


@dataclass(frozen=True, slots=True)
class TaskPage:
    """A page of a Find, newest first; ``next_cursor`` is ``None`` on the last page."""

    items: list[Task]
    next_cursor: str | None
