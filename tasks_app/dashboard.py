"""What the scheduler page of the admin shows, read in a few cheap queries.

Every query here walks an index over a bounded range: the unfinished statuses (at most
the queue and the cap), or finished tasks created in a recent window. None counts the
whole task table, which only grows. The finished-task rates are the one approximation:
there is no index on ``finished_at``, so they look at tasks created within
``CREATED_LOOKBACK`` before their window, and a task that waited longer than that in the
queue before finishing is left out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Q
from django.utils import timezone

from .interfaces import State
from .models import Status, TaskRecord
from .scheduler import get_scheduler

RATE_WINDOWS_MINUTES = (1, 5, 15)
CREATED_LOOKBACK = dt.timedelta(hours=1)
RECENT_ERRORS = 10
# Far above any cap: the slot holders are the processing tasks, at most the cap.
MAX_SLOT_HOLDERS = 200


@dataclass(frozen=True, slots=True)
class SlotHolder:
    """A processing task: the slot it holds, the worker running it, its lease."""

    uuid: str
    worker: str
    attempts: int
    started_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    running_seconds: float | None
    lease_left_seconds: float | None


@dataclass(frozen=True, slots=True)
class FinishedRate:
    """Tasks that finished within the last ``minutes``."""

    minutes: int
    done: int
    error: int

    @property
    def finished(self) -> int:
        return self.done + self.error

    @property
    def per_minute(self) -> float:
        return self.finished / self.minutes

    @property
    def error_percent(self) -> float | None:
        return 100 * self.error / self.finished if self.finished else None


@dataclass(frozen=True, slots=True)
class RecentError:
    uuid: str
    error: str
    attempts: int
    worker: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Overview:
    state: State
    holders: list[SlotHolder]
    rates: list[FinishedRate]
    oldest_queued_at: dt.datetime | None
    recent_errors: list[RecentError]
    now: dt.datetime

    @property
    def oldest_queued_seconds(self) -> float | None:
        waited = _seconds(self.now, self.oldest_queued_at)
        return None if waited is None else max(waited, 0.0)

    @property
    def slots_free(self) -> int:
        return max(self.state.num_workers - self.state.processing, 0)

    @property
    def over_cap(self) -> bool:
        """More tasks processing than this replica's cap: processes disagree on it."""
        return self.state.processing > self.state.num_workers


def oldest_queued_at(using: str = "default") -> dt.datetime | None:
    """When the task waiting longest was created: the first entry of the status index."""
    return (
        TaskRecord.objects.using(using)
        .filter(status=Status.QUEUED)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def _seconds(later: dt.datetime | None, earlier: dt.datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


def slot_holders(now: dt.datetime, using: str = "default") -> list[SlotHolder]:
    """The processing tasks, longest running first: at most the cap of them."""
    rows = (
        TaskRecord.objects.using(using)
        .filter(status=Status.PROCESSING)
        .order_by("started_at")
        .values_list("uuid", "worker", "attempts", "started_at", "lease_expires_at")
    )
    return [
        SlotHolder(
            uuid=str(uuid),
            worker=worker,
            attempts=attempts,
            started_at=started_at,
            lease_expires_at=expires_at,
            running_seconds=_seconds(now, started_at),
            lease_left_seconds=_seconds(expires_at, now),
        )
        for uuid, worker, attempts, started_at, expires_at in rows[:MAX_SLOT_HOLDERS]
    ]


def finished_rates(now: dt.datetime, using: str = "default") -> list[FinishedRate]:
    """Done and error counts over each window, in one query over the status index."""
    longest = dt.timedelta(minutes=max(RATE_WINDOWS_MINUTES))
    counts: dict[str, Count] = {}
    for minutes in RATE_WINDOWS_MINUTES:
        since = now - dt.timedelta(minutes=minutes)
        for status in (Status.DONE, Status.ERROR):
            counts[f"{status.value}_{minutes}"] = Count(
                "uuid", filter=Q(status=status, finished_at__gte=since)
            )
    totals = (
        TaskRecord.objects.using(using)
        .filter(
            status__in=[Status.DONE, Status.ERROR],
            created_at__gte=now - longest - CREATED_LOOKBACK,
            finished_at__gte=now - longest,
        )
        .aggregate(**counts)
    )
    return [
        FinishedRate(minutes, totals[f"done_{minutes}"], totals[f"error_{minutes}"])
        for minutes in RATE_WINDOWS_MINUTES
    ]


def recent_errors(using: str = "default") -> list[RecentError]:
    """The newest tasks in error, by creation: the status index read backwards."""
    rows = (
        TaskRecord.objects.using(using)
        .filter(status=Status.ERROR)
        .order_by("-created_at")
        .values_list(
            "uuid", "error", "attempts", "worker", "created_at", "finished_at"
        )[:RECENT_ERRORS]
    )
    return [
        RecentError(str(uuid), error, attempts, worker, created_at, finished_at)
        for uuid, error, attempts, worker, created_at, finished_at in rows
    ]


def overview() -> Overview:
    scheduler = get_scheduler()
    now = timezone.now()
    using = scheduler.storage.using
    return Overview(
        state=scheduler.state(),
        holders=slot_holders(now, using),
        rates=finished_rates(now, using),
        oldest_queued_at=oldest_queued_at(using),
        recent_errors=recent_errors(using),
        now=now,
    )
