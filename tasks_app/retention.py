"""Deleting finished tasks past the retention period, in small batches.

Small batches keep each transaction short, so that no delete holds locks that
admissions or claims wait on.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.utils import timezone

from .models import Status, TaskRecord

log = logging.getLogger(__name__)

BATCH_SIZE = 500


def delete_finished(
    retention_days: int, batch_size: int = BATCH_SIZE, using: str = "default"
) -> int:
    """Delete ``done`` and ``error`` tasks finished more than ``retention_days`` ago."""
    if retention_days <= 0:
        return 0
    cutoff = timezone.now() - dt.timedelta(days=retention_days)
    rows = TaskRecord.objects.using(using)
    deleted = 0
    while True:
        with transaction.atomic(using=using):
            batch = list(
                rows.filter(
                    status__in=[Status.DONE, Status.ERROR], finished_at__lt=cutoff
                )
                .order_by("finished_at")
                .values_list("uuid", flat=True)[:batch_size]
            )
            if not batch:
                break
            rows.filter(uuid__in=batch).delete()
        deleted += len(batch)
    if deleted:
        log.info(
            "retention: deleted %d tasks finished before %s",
            deleted,
            cutoff.isoformat(),
            extra={"event": "retention"},
        )
    return deleted
