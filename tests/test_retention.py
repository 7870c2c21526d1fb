"""Retention: old finished tasks and Celery results go, everything else stays."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid as uuid_module
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_celery_results.models import TaskResult

from tasks_app import retention
from tasks_app.models import Status, TaskEvent, TaskRecord

pytestmark = pytest.mark.django_db


def task(status: Status, *, days_ago: float) -> str:
    at = timezone.now() - dt.timedelta(days=days_ago)
    finished = status in (Status.DONE, Status.ERROR)
    row = TaskRecord.objects.create(
        uuid=uuid_module.uuid4(),
        hash=hashlib.sha256(uuid_module.uuid4().bytes).hexdigest(),
        status=status,
        request=b"x",
        request_size=1,
        attempts=1,
        created_at=at - dt.timedelta(minutes=5),
        started_at=at if status != Status.QUEUED else None,
        finished_at=at if finished else None,
    )
    return str(row.uuid)


def celery_result(*, days_ago: float) -> str:
    task_id = str(uuid_module.uuid4())
    TaskResult.objects.create(task_id=task_id, status="SUCCESS")
    # date_done is auto_now: set the age afterwards, as an old row would have it.
    TaskResult.objects.filter(task_id=task_id).update(
        date_done=timezone.now() - dt.timedelta(days=days_ago)
    )
    return task_id


def remaining() -> set[str]:
    return {str(uuid) for uuid in TaskRecord.objects.values_list("uuid", flat=True)}


def test_only_finished_tasks_and_results_past_the_period_are_deleted() -> None:
    old_done = task(Status.DONE, days_ago=10)
    old_error = task(Status.ERROR, days_ago=10)
    TaskEvent.objects.create(task_id=old_error, attempt=1, event="lease_expired")
    recent = task(Status.DONE, days_ago=1)
    old_queued = task(Status.QUEUED, days_ago=10)
    old_processing = task(Status.PROCESSING, days_ago=10)
    old_result = celery_result(days_ago=10)
    new_result = celery_result(days_ago=1)

    purged = retention.purge(7, batch_size=1)

    assert (purged.tasks, purged.celery_results) == (2, 1)
    assert remaining() == {recent, old_queued, old_processing}
    assert old_done not in remaining()
    assert not TaskEvent.objects.filter(task_id=old_error).exists()
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {new_result}
    assert old_result not in set(TaskResult.objects.values_list("task_id", flat=True))


def test_zero_days_keeps_everything() -> None:
    task(Status.DONE, days_ago=400)
    celery_result(days_ago=400)
    assert retention.delete_finished(0) == 0
    assert TaskRecord.objects.count() == 1 and TaskResult.objects.count() == 1


def test_the_keepers_entry_point_deletes_results_too() -> None:
    task(Status.DONE, days_ago=40)
    celery_result(days_ago=40)
    assert retention.delete_finished(30) == 1
    assert TaskResult.objects.count() == 0


def test_purge_finished_takes_days_from_the_command_line() -> None:
    task(Status.DONE, days_ago=3)
    kept = task(Status.DONE, days_ago=1)
    celery_result(days_ago=3)
    out = StringIO()
    call_command("purge_finished", "--days", "2", stdout=out)
    assert out.getvalue().startswith("deleted 1 tasks and 1 Celery results finished")
    assert remaining() == {kept}


def test_purge_finished_defaults_to_the_retention_setting(settings: Any) -> None:
    settings.SCHEDULER_RETENTION_DAYS = 5
    task(Status.ERROR, days_ago=6)
    kept = task(Status.ERROR, days_ago=4)
    call_command("purge_finished", stdout=StringIO())
    assert remaining() == {kept}


def test_purge_finished_refuses_to_guess_when_retention_is_off(settings: Any) -> None:
    settings.SCHEDULER_RETENTION_DAYS = 0
    task(Status.DONE, days_ago=100)
    with pytest.raises(CommandError, match="--days") as refused:
        call_command("purge_finished", stdout=StringIO())
    assert refused.value.returncode == 2
    with pytest.raises(CommandError, match="at least 1"):
        call_command("purge_finished", "--days", "0", stdout=StringIO())
    assert TaskRecord.objects.count() == 1
