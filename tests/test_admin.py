"""The admin through the test client: what it shows, what it hides, what its actions do."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid as uuid_module
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tasks_app.interfaces import UUID, Task, TaskStatus
from tasks_app.models import TaskEvent, TaskRecord
from tasks_app.scheduler import get_scheduler
from tasks_app.storage import DjangoTaskStorage

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks_app/taskrecord/"
# Bytes that must never reach a page: a marker that would show if they were rendered.
SECRET_REQUEST = b"REQUEST-BYTES-MUST-NOT-SHOW"
SECRET_RESULT = b"RESULT-BYTES-MUST-NOT-SHOW"
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def fresh_scheduler() -> Iterator[None]:
    get_scheduler.cache_clear()
    yield
    get_scheduler.cache_clear()


def make_task(
    status: TaskStatus,
    *,
    request: bytes | None = None,
    result: bytes | None = None,
    error: str = "",
    minutes: int = 0,
) -> Task:
    request = request if request is not None else uuid_module.uuid4().bytes
    created = T0 + dt.timedelta(minutes=minutes)
    task = Task(
        uuid=UUID(str(uuid_module.uuid4())),
        hash=hashlib.sha256(request).hexdigest(),
        status=status,
        request=request,
        result=result,
        error=error,
        attempts=1 if status != TaskStatus.QUEUED else 0,
        created_at=created,
        started_at=created + dt.timedelta(seconds=2)
        if status != TaskStatus.QUEUED
        else None,
        finished_at=created + dt.timedelta(seconds=4.5) if status.is_finished else None,
        request_size=len(request),
        result_size=len(result) if result is not None else None,
        worker="w1@host" if status != TaskStatus.QUEUED else "",
    )
    DjangoTaskStorage().store(task)
    return task


def post_action(client: Client, action: str, selected: list[str] | None = None) -> Any:
    data: dict[str, Any] = {"action": action, "index": "0"}
    if selected:
        data["_selected_action"] = selected
    return client.post(CHANGELIST, data, follow=True)


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def staff_user(*permissions: str) -> User:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


# --- what the pages show ----------------------------------------------------------------


def test_list_shows_sizes_short_hash_and_duration_but_never_the_bytes(
    admin_client: Client,
) -> None:
    task = make_task(TaskStatus.DONE, request=SECRET_REQUEST, result=SECRET_RESULT)
    response = admin_client.get(CHANGELIST)
    page = response.content.decode()

    assert response.status_code == 200
    assert task.uuid in page
    assert task.hash[:12] in page and task.hash not in page
    assert "2.500 s" in page
    assert SECRET_REQUEST.decode() not in page
    assert SECRET_RESULT.decode() not in page
    assert "Scheduler accepting" in page


def test_pages_never_load_the_bytes(admin_client: Client) -> None:
    task = make_task(TaskStatus.DONE, request=SECRET_REQUEST, result=SECRET_RESULT)
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(CHANGELIST).status_code == 200
        assert admin_client.get(f"{CHANGELIST}{task.uuid}/change/").status_code == 200
    task_reads = [q["sql"] for q in queries if 'FROM "scheduler_task"' in q["sql"]]
    assert task_reads
    for sql in task_reads:
        assert '"scheduler_task"."request"' not in sql
        assert '"scheduler_task"."result"' not in sql


def test_detail_page_is_read_only_with_error_text_and_events(
    admin_client: Client,
) -> None:
    task = make_task(
        TaskStatus.ERROR,
        request=SECRET_REQUEST,
        error="RuntimeError: the disk is full",
    )
    TaskEvent.objects.create(
        task_id=task.uuid,
        attempt=1,
        event="worker_lost",
        worker="w1@host",
        detail="lease expired; put back",
    )
    page = admin_client.get(f"{CHANGELIST}{task.uuid}/change/")
    html = page.content.decode()

    assert page.status_code == 200
    assert "RuntimeError: the disk is full" in html
    assert "worker_lost" in html and "lease expired; put back" in html
    assert SECRET_REQUEST.decode() not in html
    assert 'name="_save"' not in html  # no save button: nothing to edit
    assert 'name="status"' not in html
    assert 'name="events-0-event"' not in html


def test_nothing_is_changed_added_or_deleted_by_hand(admin_client: Client) -> None:
    task = make_task(TaskStatus.ERROR, error="boom")
    change = admin_client.post(
        f"{CHANGELIST}{task.uuid}/change/", {"status": "done", "error": ""}
    )
    assert change.status_code == 403
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{task.uuid}/delete/").status_code == 403
    row = TaskRecord.objects.get(uuid=task.uuid)
    assert (row.status, row.error) == ("error", "boom")


def test_search_by_uuid_whole_or_part_and_by_hash_prefix(admin_client: Client) -> None:
    wanted = make_task(TaskStatus.DONE, result=b"r")
    other = make_task(TaskStatus.DONE, result=b"r", minutes=1)

    for term in (wanted.uuid, wanted.uuid.upper(), wanted.uuid[:13], wanted.hash[:16]):
        page = admin_client.get(CHANGELIST, {"q": term}).content.decode()
        assert wanted.uuid in page, term
        assert other.uuid not in page, term


def test_filter_by_status_and_created_date(admin_client: Client) -> None:
    done = make_task(TaskStatus.DONE, result=b"r")
    failed = make_task(TaskStatus.ERROR, error="x", minutes=1)

    page = admin_client.get(CHANGELIST, {"status__exact": "error"}).content.decode()
    assert failed.uuid in page and done.uuid not in page

    today = admin_client.get(
        CHANGELIST,
        {
            "created_at__gte": "2030-01-01 00:00:00+00:00",
            "created_at__lt": "2030-01-02 00:00:00+00:00",
        },
    ).content.decode()
    assert failed.uuid in today and done.uuid in today
    assert "By created at" in admin_client.get(CHANGELIST).content.decode()


# --- actions ----------------------------------------------------------------------------


def test_close_and_reopen_act_on_the_scheduler_with_nothing_ticked(
    admin_client: Client,
) -> None:
    closed = post_action(admin_client, "close_scheduler")
    assert closed.status_code == 200
    assert get_scheduler().state().closed is True
    assert any("Scheduler drained" in m for m in messages_of(closed))

    reopened = post_action(admin_client, "reopen_scheduler")
    assert get_scheduler().state().closed is False
    assert any("Scheduler accepting" in m for m in messages_of(reopened))


def test_close_works_with_tasks_ticked_too(admin_client: Client) -> None:
    task = make_task(TaskStatus.QUEUED)
    post_action(admin_client, "close_scheduler", [task.uuid])
    state = get_scheduler().state()
    assert state.closed is True
    assert state.state == "draining"
    # The ticked task is untouched: closing is about the scheduler.
    assert TaskRecord.objects.get(uuid=task.uuid).status == "queued"


def test_retry_requeues_the_ticked_tasks_in_error_and_skips_the_rest(
    admin_client: Client,
) -> None:
    failed = make_task(TaskStatus.ERROR, error="RuntimeError: flaky")
    done = make_task(TaskStatus.DONE, result=b"kept", minutes=1)

    response = post_action(admin_client, "retry_errored", [failed.uuid, done.uuid])

    assert messages_of(response) == ["Queued 1 tasks again; 1 were not in error."]
    retried = get_scheduler().get_task(failed.uuid)
    assert retried.status == TaskStatus.QUEUED
    assert retried.error == "" and retried.attempts == 0
    kept = get_scheduler().get_task(done.uuid)
    assert kept.status == TaskStatus.DONE and kept.result_size == len(b"kept")


def test_retry_while_closed_is_refused_and_changes_nothing(
    admin_client: Client,
) -> None:
    failed = make_task(TaskStatus.ERROR, error="x")
    get_scheduler().close()
    response = post_action(admin_client, "retry_errored", [failed.uuid])
    assert any("refused" in m for m in messages_of(response))
    assert get_scheduler().get_task(failed.uuid).status == TaskStatus.ERROR


def test_staff_without_operate_permission_cannot_close_or_retry(client: Client) -> None:
    client.force_login(staff_user("view_taskrecord"))
    failed = make_task(TaskStatus.ERROR, error="x")

    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert "close_scheduler" not in page.content.decode()

    post_action(client, "close_scheduler")
    post_action(client, "retry_errored", [failed.uuid])
    assert get_scheduler().state().closed is False
    assert get_scheduler().get_task(failed.uuid).status == TaskStatus.ERROR


def test_staff_with_operate_permission_can_close_and_reopen(client: Client) -> None:
    client.force_login(staff_user("view_taskrecord", "operate_scheduler"))
    assert "close_scheduler" in client.get(CHANGELIST).content.decode()
    post_action(client, "close_scheduler")
    assert get_scheduler().state().closed is True
    post_action(client, "reopen_scheduler")
    assert get_scheduler().state().closed is False


def test_admin_keeps_its_html_pages_for_people(admin_client: Client) -> None:
    missing = admin_client.get("/admin/tasks_app/nothing-here/")
    assert missing.status_code == 404
    assert not missing["Content-Type"].startswith("application/json")
