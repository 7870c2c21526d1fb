"""The scheduler page of the admin and the task pages, through the Django test client."""

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
from django.utils import timezone

from tasks_app.interfaces import UUID, Task, TaskStatus
from tasks_app.models import TaskEvent, TaskRecord
from tasks_app.scheduler import get_scheduler
from tasks_app.storage import DjangoTaskStorage

pytestmark = pytest.mark.django_db

PAGE = "/admin/scheduler/"
CLOSE = "/admin/scheduler/close/"
OPEN = "/admin/scheduler/open/"
TASKS = "/admin/tasks_app/taskrecord/"


@pytest.fixture(autouse=True)
def fresh_scheduler() -> Iterator[None]:
    get_scheduler.cache_clear()
    yield
    get_scheduler.cache_clear()


def make_task(
    status: TaskStatus,
    *,
    ago: dt.timedelta = dt.timedelta(0),
    run: dt.timedelta = dt.timedelta(seconds=2),
    error: str = "",
    worker: str = "",
) -> Task:
    request = uuid_module.uuid4().bytes
    created = timezone.now() - ago
    started = created + dt.timedelta(seconds=1) if status != TaskStatus.QUEUED else None
    finished = started + run if started is not None and status.is_finished else None
    task = Task(
        uuid=UUID(str(uuid_module.uuid4())),
        hash=hashlib.sha256(request).hexdigest(),
        status=status,
        request=request,
        result=b"r" if status == TaskStatus.DONE else None,
        error=error,
        attempts=0 if status == TaskStatus.QUEUED else 1,
        created_at=created,
        started_at=started,
        finished_at=finished,
        request_size=len(request),
        result_size=1 if status == TaskStatus.DONE else None,
        worker=worker,
    )
    DjangoTaskStorage().store(task)
    return task


def hold_lease(task: Task, seconds: float) -> None:
    TaskRecord.objects.filter(uuid=task.uuid).update(
        lease_owner="boot:123",
        lease_expires_at=timezone.now() + dt.timedelta(seconds=seconds),
    )


def staff(*codenames: str) -> User:
    user = User.objects.create_user(f"staff-{len(codenames)}", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def html(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return str(response.content.decode())


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- what the page shows ----------------------------------------------------------------


def test_page_shows_state_counts_slots_and_their_workers(admin_client: Client) -> None:
    make_task(TaskStatus.QUEUED, ago=dt.timedelta(seconds=90))
    make_task(TaskStatus.QUEUED)
    running = make_task(TaskStatus.PROCESSING, worker="w7@host pid 4242")
    hold_lease(running, 12)

    page = html(admin_client.get(PAGE))

    assert 'data-state="accepting"' in page
    assert '<td class="figure" id="figure-queued">2</td>' in page
    assert '<td class="figure" id="figure-processing">1</td>' in page
    assert "1 / 2" in page  # slots in use of the cap, SCHEDULER_NUM_WORKERS=2
    assert "w7@host pid 4242" in page
    assert f"{TASKS}{running.uuid}/change/" in page
    oldest = page.split('id="figure-oldest">')[1].split(" s<")[0]
    assert 89 <= int(oldest) <= 100
    lease_left = page.split("pid 4242</td>")[1].split("</tr>")[0]
    assert "11." in lease_left or "12.0" in lease_left


def test_page_says_when_more_tasks_process_than_its_cap(admin_client: Client) -> None:
    running = [make_task(TaskStatus.PROCESSING) for _ in range(2)]
    for task in running:
        hold_lease(task, 12)
    assert 'id="over-cap"' not in html(
        admin_client.get(PAGE)
    )  # 2 of SCHEDULER_NUM_WORKERS=2

    hold_lease(make_task(TaskStatus.PROCESSING), 12)

    page = html(admin_client.get(PAGE))
    assert "3 / 2" in page
    assert 'id="over-cap"' in page


def test_page_counts_finished_tasks_per_window_with_the_error_rate(
    admin_client: Client,
) -> None:
    for _ in range(3):
        make_task(TaskStatus.DONE, ago=dt.timedelta(seconds=20))
    make_task(TaskStatus.ERROR, ago=dt.timedelta(seconds=20), error="boom")
    make_task(TaskStatus.DONE, ago=dt.timedelta(minutes=10))
    make_task(TaskStatus.DONE, ago=dt.timedelta(hours=3))  # outside every window

    page = html(admin_client.get(PAGE))
    table = page.split('id="finished-rates"')[1].split("</table>")[0]
    rows = [row for row in table.split("<tr>")[2:]]

    def cells(row: str) -> list[str]:
        return [cell.split(">")[-1] for cell in row.split("</td>")[:-1]]

    assert cells(rows[0]) == ["3", "1", "4.0", "25.0 %"]  # the last minute
    assert cells(rows[1]) == ["3", "1", "0.8", "25.0 %"]  # 5 minutes
    assert cells(rows[2]) == ["4", "1", "0.3", "20.0 %"]  # 15 minutes


def test_recent_errors_link_to_their_task_pages(admin_client: Client) -> None:
    failed = make_task(
        TaskStatus.ERROR, error="RuntimeError: the disk is full", worker="w1"
    )
    make_task(TaskStatus.DONE)
    page = html(admin_client.get(PAGE))
    errors = page.split('id="recent-errors"')[1].split("</table>")[0]
    assert f'href="{TASKS}{failed.uuid}/change/"' in errors
    assert "RuntimeError: the disk is full" in errors


def test_the_admin_index_and_the_task_list_link_to_the_page(
    admin_client: Client,
) -> None:
    assert f'href="{PAGE}"' in html(admin_client.get("/admin/"))
    assert f'href="{PAGE}"' in html(admin_client.get(TASKS))


# --- closing and reopening ----------------------------------------------------------------


def test_close_asks_for_confirmation_then_closes_through_a_post(
    admin_client: Client,
) -> None:
    confirm = html(admin_client.get(CLOSE))
    assert "Yes, close the scheduler" in confirm
    assert get_scheduler().state().closed is False  # a GET changes nothing

    closed = admin_client.post(CLOSE, follow=True)
    assert get_scheduler().state().closed is True
    assert 'data-state="drained"' in html(closed)
    assert any("Scheduler drained" in m for m in messages_of(closed))
    assert 'id="reopen-scheduler"' in html(closed)

    reopened = admin_client.post(OPEN, follow=True)
    assert get_scheduler().state().closed is False
    assert 'data-state="accepting"' in html(reopened)


def test_closed_with_tasks_left_reads_draining(admin_client: Client) -> None:
    make_task(TaskStatus.QUEUED)
    get_scheduler().close()
    assert 'data-state="draining"' in html(admin_client.get(PAGE))


def test_a_post_without_the_csrf_token_is_refused(admin_user: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(CLOSE).status_code == 403
    assert get_scheduler().state().closed is False


def test_staff_without_operate_permission_sees_the_page_but_cannot_close(
    client: Client,
) -> None:
    client.force_login(staff("view_taskrecord"))
    page = html(client.get(PAGE))
    assert 'id="close-scheduler"' not in page

    assert client.get(CLOSE).status_code == 403
    assert client.post(CLOSE).status_code == 403
    get_scheduler().close()
    assert client.post(OPEN).status_code == 403
    assert get_scheduler().state().closed is True


def test_staff_with_operate_permission_can_close_and_reopen(client: Client) -> None:
    client.force_login(staff("view_taskrecord", "operate_scheduler"))
    assert 'id="close-scheduler"' in html(client.get(PAGE))
    client.post(CLOSE)
    assert get_scheduler().state().closed is True
    client.post(OPEN)
    assert get_scheduler().state().closed is False


def test_staff_without_view_permission_gets_no_page(client: Client) -> None:
    client.force_login(staff())
    assert client.get(PAGE).status_code == 403


def test_anonymous_visitors_are_sent_to_the_login(client: Client) -> None:
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    client.post(CLOSE)
    assert get_scheduler().state().closed is False


# --- the task pages -----------------------------------------------------------------------


def test_an_errored_task_shows_its_error_history_and_a_retry_button(
    admin_client: Client,
) -> None:
    failed = make_task(TaskStatus.ERROR, error="RuntimeError: flaky", worker="w1")
    TaskEvent.objects.create(
        task_id=failed.uuid,
        attempt=1,
        event="lease_expired",
        worker="w1",
        detail="worker w1 stopped renewing its lease",
    )
    page = html(admin_client.get(f"{TASKS}{failed.uuid}/change/"))
    assert "RuntimeError: flaky" in page
    assert "Attempt history" in page and "lease_expired" in page
    assert 'id="retry-task"' in page

    retried = admin_client.post(f"{TASKS}{failed.uuid}/retry/", follow=True)
    assert any("queued again" in m for m in messages_of(retried))
    assert get_scheduler().get_task(failed.uuid).status == TaskStatus.QUEUED


def test_a_done_task_has_no_retry_button_and_a_retry_is_refused(
    admin_client: Client,
) -> None:
    done = make_task(TaskStatus.DONE)
    assert 'id="retry-task"' not in html(
        admin_client.get(f"{TASKS}{done.uuid}/change/")
    )
    refused = admin_client.post(f"{TASKS}{done.uuid}/retry/", follow=True)
    assert any("Not retried" in m for m in messages_of(refused))
    assert get_scheduler().get_task(done.uuid).status == TaskStatus.DONE


def test_retry_while_closed_is_refused_with_the_reason(admin_client: Client) -> None:
    failed = make_task(TaskStatus.ERROR, error="x")
    get_scheduler().close()
    refused = admin_client.post(f"{TASKS}{failed.uuid}/retry/", follow=True)
    assert any("closed" in m for m in messages_of(refused))
    assert get_scheduler().get_task(failed.uuid).status == TaskStatus.ERROR


def test_retry_needs_the_operate_permission_and_a_post(client: Client) -> None:
    failed = make_task(TaskStatus.ERROR, error="x")
    client.force_login(staff("view_taskrecord"))
    page = html(client.get(f"{TASKS}{failed.uuid}/change/"))
    assert 'id="retry-task"' not in page
    assert client.post(f"{TASKS}{failed.uuid}/retry/").status_code == 403

    client.force_login(staff("view_taskrecord", "operate_scheduler"))
    assert client.get(f"{TASKS}{failed.uuid}/retry/").status_code == 405
    assert get_scheduler().get_task(failed.uuid).status == TaskStatus.ERROR


def test_the_task_list_shows_durations_and_attempts(admin_client: Client) -> None:
    make_task(TaskStatus.DONE, run=dt.timedelta(seconds=2.5))
    page = html(admin_client.get(TASKS))
    assert "2.500 s" in page
    assert "column-attempts" in page


# --- cheap on a large table -----------------------------------------------------------------


def fill_history(rows: int) -> None:
    """``rows`` finished tasks from days ago, written by the database itself."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_task (uuid, hash, status, request, request_size,
                error, attempts, created_at, started_at, finished_at, worker,
                lease_owner)
            SELECT md5(i::text)::uuid, md5(i::text) || md5((-i)::text),
                CASE WHEN i %% 10 = 0 THEN 'error' ELSE 'done' END, '\\x00', 1,
                '', 1, t, t, t + interval '1 second', 'w1', ''
            FROM generate_series(1, %s) AS i,
                LATERAL (SELECT now() - interval '3 days'
                    + i * interval '1 millisecond') AS at(t)
            """,
            [rows],
        )
        cursor.execute("ANALYZE scheduler_task")


def test_the_page_reads_no_table_in_full(admin_client: Client) -> None:
    fill_history(200_000)
    make_task(TaskStatus.DONE, ago=dt.timedelta(seconds=30))
    make_task(TaskStatus.ERROR, error="x")
    make_task(TaskStatus.QUEUED)

    with CaptureQueriesContext(connection) as queries:
        html(admin_client.get(PAGE))
    reads = [q["sql"] for q in queries if 'FROM "scheduler_task"' in q["sql"]]
    assert len(reads) >= 4
    with connection.cursor() as cursor:
        for sql in reads:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on scheduler_task" not in plan, f"{sql}\n{plan}"


def test_the_task_list_counts_a_large_table_only_up_to_a_cap(
    admin_client: Client,
) -> None:
    fill_history(12_000)
    with CaptureQueriesContext(connection) as queries:
        page = html(admin_client.get(TASKS))
    counts = [q["sql"] for q in queries if "COUNT(*)" in q["sql"]]
    assert counts and all("LIMIT 10000" in sql for sql in counts)
    assert "10000 tasks" in page
