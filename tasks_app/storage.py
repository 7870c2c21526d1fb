"""The Storage interface over the task table, plus the reads the scheduler pages with.

The guarded writes that move a task between statuses live in ``admission`` and
``leases``; this module only creates, updates and reads whole records.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from django.db.models import Count, Q, QuerySet

from . import sql
from .errors import BadRequest, TaskNotFound
from .find import operators_to_q, parse_datetime, parse_uuid
from .interfaces import UUID, FindOperator, Task, TaskPage, TaskStatus
from .models import TaskRecord

MAX_PAGE_SIZE = 1000
_BYTES_FIELDS = ("request", "result")


def to_task(row: TaskRecord, *, with_bytes: bool) -> Task:
    request = bytes(row.request) if with_bytes else None
    result = bytes(row.result) if with_bytes and row.result is not None else None
    return Task(
        uuid=UUID(str(row.uuid)),
        hash=row.hash,
        status=TaskStatus(row.status),
        request=request,
        result=result,
        error=row.error,
        attempts=row.attempts,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        request_size=row.request_size,
        result_size=row.result_size,
        worker=row.worker,
    )


def _without_bytes(rows: QuerySet[TaskRecord]) -> QuerySet[TaskRecord]:
    return rows.defer(*_BYTES_FIELDS)


def encode_cursor(task: Task) -> str:
    raw = json.dumps([task.created_at.isoformat(), task.uuid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# What encode_cursor makes is about 110 characters; anything much longer is not one.
MAX_CURSOR_CHARS = 200


def decode_cursor(cursor: str) -> tuple[dt.datetime, UUID]:
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            # Unsigned base64 JSON: a deeply nested array would take the JSON parser
            # into a RecursionError, a 500 anyone could ask for.
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, uuid = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(created_at, str) or not isinstance(uuid, str):
            raise ValueError("a cursor holds two strings")
        return parse_datetime(created_at), parse_uuid(uuid)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"cursor {cursor[:80]!r} is not one this service issued"
        ) from None


class DjangoTaskStorage:
    """``Storage[Task]`` on the Django ORM (PostgreSQL in production, SQLite alone)."""

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def rows(self) -> QuerySet[TaskRecord]:
        return TaskRecord.objects.using(self.using)

    # --- the fixed interface ---------------------------------------------------------

    def store(self, item: Task) -> UUID:
        uuid = parse_uuid(item.uuid)
        request = item.request if item.request is not None else b""
        fields: dict[str, Any] = {
            "hash": item.hash,
            "status": TaskStatus(item.status).value,
            "request": request,
            "request_size": len(request),
            "result": item.result,
            "result_size": len(item.result) if item.result is not None else None,
            "error": item.error,
            "attempts": item.attempts,
            "created_at": item.created_at,
            "started_at": item.started_at,
            "finished_at": item.finished_at,
            "worker": item.worker,
        }
        if item.request is None:
            # A task read without its bytes keeps the bytes it has.
            for name in ("request", "request_size", "result", "result_size"):
                fields.pop(name)
        self.rows().update_or_create(uuid=uuid, defaults=fields)
        return uuid

    def get(self, uuid: UUID) -> Task:
        return to_task(self._row(uuid, self.rows()), with_bytes=True)

    def find(self, operators: list[FindOperator]) -> list[Task]:
        rows = (
            self.rows()
            .filter(operators_to_q(operators))
            .order_by("-created_at", "-uuid")
        )
        return [to_task(row, with_bytes=True) for row in rows]

    # --- reads the scheduler adds ----------------------------------------------------

    def get_without_bytes(self, uuid: UUID) -> Task:
        return to_task(self._row(uuid, _without_bytes(self.rows())), with_bytes=False)

    def get_result(self, uuid: UUID) -> tuple[TaskStatus, bytes | None]:
        if sql.is_postgresql(self.using):
            # In binary: the ORM reads bytea as hex text, twice the result's size in
            # libpq's buffer before the decoded copy.
            normalised = parse_uuid(uuid)
            rows = sql.fetch(
                self.using,
                "SELECT status, result_size, "
                "CASE WHEN result_size <= %s THEN result END "
                "FROM scheduler_task WHERE uuid = %s::uuid",
                (sql.INLINE_BYTES, normalised),
            )
            if not rows:
                raise TaskNotFound(normalised)
            ((status, size, result),) = rows
            if result is None and size is not None:
                result = sql.read_bytes(self.using, "result", normalised)
            return TaskStatus(status), result
        row = self._row(uuid, self.rows().only("uuid", "status", "result"))
        result = bytes(row.result) if row.result is not None else None
        return TaskStatus(row.status), result

    def find_page(
        self, operators: list[FindOperator], limit: int, cursor: str | None
    ) -> TaskPage:
        """Newest first; the cursor is the position after the last task of a page."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise BadRequest(
                f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}"
            )
        condition = operators_to_q(operators)
        if cursor:
            created_at, uuid = decode_cursor(cursor)
            condition &= Q(created_at__lt=created_at) | Q(
                created_at=created_at, uuid__lt=uuid
            )
        rows = list(
            _without_bytes(self.rows())
            .filter(condition)
            .order_by("-created_at", "-uuid")[: limit + 1]
        )
        tasks = [to_task(row, with_bytes=False) for row in rows[:limit]]
        next_cursor = encode_cursor(tasks[-1]) if len(rows) > limit else None
        return TaskPage(items=tasks, next_cursor=next_cursor)

    def count_unfinished(self) -> tuple[int, int]:
        """(queued, processing): the index on status keeps this cheap at any table size."""
        counts = dict(
            self.rows()
            .filter(status__in=[TaskStatus.QUEUED, TaskStatus.PROCESSING])
            .values_list("status")
            .annotate(n=Count("uuid"))
            .values_list("status", "n")
        )
        return counts.get(TaskStatus.QUEUED, 0), counts.get(TaskStatus.PROCESSING, 0)

    def _row(self, uuid: UUID, rows: QuerySet[TaskRecord]) -> TaskRecord:
        normalised = parse_uuid(uuid)
        try:
            return rows.get(uuid=normalised)
        except TaskRecord.DoesNotExist:
            raise TaskNotFound(normalised) from None
