"""Deleting finished tasks past the retention period, in small batches.

Small batches keep each transaction short, so that no delete holds locks that
admissions or claims wait on. Celery's own result rows (django-celery-results'
``TaskResult``, one per message that ran something) go at the same age: they only say
which task UUIDs a message ran, and nothing reads them once the tasks are gone.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TypeVar

from django.db import transaction
from django.db.models import Model, QuerySet
from django.utils import timezone
from django_celery_results.models import TaskResult

from .models import Status, TaskRecord

log = logging.getLogger(__name__)

BATCH_SIZE = 500

RowT = TypeVar("RowT", bound=Model)


@dataclass(frozen=True, slots=True)
class Purged:
    tasks: int
    celery_results: int
    cutoff: dt.datetime


def _delete_in_batches(
    rows: QuerySet[RowT], order_by: str, batch_size: int, using: str
) -> int:
    """Delete ``rows`` oldest first, ``batch_size`` primary keys per transaction."""
    deleted = 0
    while True:
        with transaction.atomic(using=using):
            batch = list(
                rows.order_by(order_by).values_list("pk", flat=True)[:batch_size]
            )
            if not batch:
                return deleted
            rows.model._default_manager.using(using).filter(pk__in=batch).delete()
        deleted += len(batch)


def purge(
    retention_days: int, batch_size: int = BATCH_SIZE, using: str = "default"
) -> Purged:
    """Delete tasks finished, and Celery results stored, over ``retention_days`` ago."""
    cutoff = timezone.now() - dt.timedelta(days=retention_days)
    if retention_days <= 0:
        return Purged(0, 0, cutoff)
    # A task finished before the cutoff was created before it too: the condition on
    # created_at lets the status index find the old rows without reading the new ones.
    tasks = TaskRecord.objects.using(using).filter(
        status__in=[Status.DONE, Status.ERROR],
        created_at__lt=cutoff,
        finished_at__lt=cutoff,
    )
    results = TaskResult.objects.using(using).filter(date_done__lt=cutoff)
    purged = Purged(
        tasks=_delete_in_batches(tasks, "created_at", batch_size, using),
        celery_results=_delete_in_batches(results, "date_done", batch_size, using),
        cutoff=cutoff,
    )
    if purged.tasks or purged.celery_results:
        log.info(
            "retention: deleted %d tasks and %d Celery results finished before %s",
            purged.tasks,
            purged.celery_results,
            cutoff.isoformat(),
            extra={"event": "retention"},
        )
    return purged


def delete_finished(
    retention_days: int, batch_size: int = BATCH_SIZE, using: str = "default"
) -> int:
    """Delete what is past ``retention_days``; returns how many tasks went."""
    return purge(retention_days, batch_size, using).tasks
