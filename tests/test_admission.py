"""Admission under real concurrency: deduplication, the queue bound, closing.

Requests come from several processes at once, each with its own database connection,
the way replicas of the web and gRPC servers submit.
"""

from __future__ import annotations

import pytest

from tasks_app.errors import EmptyRequest, QueueFull, RequestTooLarge, SchedulerClosed
from tasks_app.interfaces import TaskStatus
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler
from tasks_app.storage import DjangoTaskStorage
from tests.harness import (
    Cluster,
    RedisServer,
    broker_messages,
    submit_from_processes,
    task_request,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_identical_requests_from_many_processes_make_one_task(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    rounds = 5
    for round_number in range(rounds):
        request = task_request(id=f"same bytes, round {round_number}")
        answers = submit_from_processes(cluster.env, [request], processes=5, threads=10)

        assert len(answers) == 50
        assert all("error" not in answer for answer in answers), answers
        assert len({answer["uuid"] for answer in answers}) == 1
        assert sum(1 for answer in answers if answer["created"]) == 1
        assert TaskRecord.objects.filter(request=request).count() == 1
        assert broker_messages(redis_server) == round_number + 1

    cluster.start_worker(concurrency=2)
    wait_until(
        lambda: TaskRecord.objects.filter(status=TaskStatus.DONE).count() == rounds,
        60,
        message="every round done",
    )
    calls = cluster.call_log.calls_per_hash()
    assert len(calls) == rounds
    assert set(calls.values()) == {1}


def test_queue_bound_is_exact_under_concurrent_admissions(cluster: Cluster) -> None:
    cluster.configure(scheduler_queue_size=20)
    requests = [task_request(id=f"distinct {i}") for i in range(12)]
    # 4 processes x 5 threads, each submitting the same 12 distinct requests: 240
    # attempts at 12 tasks, then 60 more distinct ones racing for the remaining room.
    answers = submit_from_processes(cluster.env, requests, processes=4, threads=5)
    assert TaskRecord.objects.count() == 12
    assert all("error" not in answer for answer in answers)

    more = [task_request(id=f"more {i}") for i in range(30)]
    answers = submit_from_processes(cluster.env, more, processes=2, threads=1)
    created = {answer["uuid"] for answer in answers if answer.get("created")}
    assert len(answers) == 60
    assert TaskRecord.objects.filter(status=TaskStatus.QUEUED).count() == 20
    assert len(created) == 8
    assert sum(1 for answer in answers if answer.get("error") == "queue_full") >= 22
    assert all(answer.get("error") in (None, "queue_full") for answer in answers)

    # A duplicate is answered even with the queue full.
    again = submit_from_processes(cluster.env, requests[:1], processes=1, threads=1)
    assert again[0].get("created") is False


def test_full_queue_refuses_new_but_answers_duplicates(scheduler: Scheduler) -> None:
    small = Scheduler(
        DjangoTaskStorage(), scheduler.processor, num_workers=1, queue_size=2
    )
    first = small.add_task(b"one")
    small.add_task(b"two")
    with pytest.raises(QueueFull, match="queue is full"):
        small.add_task(b"three")
    assert small.add_task(b"one") == first
    assert TaskRecord.objects.count() == 2


def test_closed_scheduler_refuses_everything_new_and_duplicates(
    scheduler: Scheduler,
) -> None:
    known = scheduler.add_task(b"accepted before closing")
    state = scheduler.close()
    assert state.closed and state.state == "draining"

    with pytest.raises(SchedulerClosed):
        scheduler.add_task(b"new while closed")
    with pytest.raises(SchedulerClosed):
        scheduler.add_task(b"accepted before closing")
    assert TaskRecord.objects.count() == 1

    assert scheduler.open().state == "accepting"
    assert scheduler.add_task(b"accepted before closing") == known


def test_closing_holds_in_every_process(cluster: Cluster, scheduler: Scheduler) -> None:
    scheduler.close()
    answers = submit_from_processes(
        cluster.env, [task_request(id=i) for i in range(5)], processes=2, threads=2
    )
    assert {answer["error"] for answer in answers} == {"closed"}
    assert TaskRecord.objects.count() == 0

    scheduler.open()
    answers = submit_from_processes(cluster.env, [task_request(id="open")], 1, 1)
    assert answers[0]["created"] is True


def test_replica_held_closed_refuses_alone(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    held = {**cluster.env, "SCHEDULER_ACCEPTING": "false"}
    answers = submit_from_processes(held, [task_request(id="held")], 1, 1)
    assert answers == [{"error": "closed"}]
    assert scheduler.state().closed is False
    held_scheduler = Scheduler(
        DjangoTaskStorage(), scheduler.processor, 1, 10, accepting_here=False
    )
    assert held_scheduler.state().closed is True


def test_empty_and_oversized_requests_are_refused_before_hashing(
    scheduler: Scheduler,
) -> None:
    small = Scheduler(
        DjangoTaskStorage(), scheduler.processor, 1, 10, max_request_bytes=8
    )
    with pytest.raises(EmptyRequest):
        small.add_task(b"")
    with pytest.raises(RequestTooLarge, match="9 bytes is over the limit of 8"):
        small.add_task(b"123456789")
    assert TaskRecord.objects.count() == 0


def test_constructor_refuses_caps_below_one(scheduler: Scheduler) -> None:
    with pytest.raises(ValueError, match="num_workers"):
        Scheduler(DjangoTaskStorage(), scheduler.processor, 0, 10)
    with pytest.raises(ValueError, match="queue_size"):
        Scheduler(DjangoTaskStorage(), scheduler.processor, 1, 0)
