"""A task's life through real workers: queued, processing, done or error."""

from __future__ import annotations

import pytest

from tasks_app.interfaces import TaskStatus
from tests.harness import Cluster, task_request, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def finished(scheduler, uuid):  # type: ignore[no-untyped-def]
    return scheduler.get_task(uuid).status.is_finished


def test_task_moves_queued_processing_done(cluster: Cluster, scheduler) -> None:  # type: ignore[no-untyped-def]
    uuid = scheduler.add_task(task_request(id="lifecycle", sleep=1.5))
    assert scheduler.get_task(uuid).status == TaskStatus.QUEUED

    cluster.start_worker(concurrency=1)
    wait_until(
        lambda: scheduler.get_task(uuid).status == TaskStatus.PROCESSING,
        30,
        message="processing",
    )
    wait_until(lambda: finished(scheduler, uuid), 30, message="finished")

    task = scheduler.get_task(uuid)
    assert task.status == TaskStatus.DONE
    assert task.attempts == 1
    assert task.started_at is not None and task.finished_at is not None
    assert task.finished_at >= task.started_at
    stored = scheduler.storage.get(uuid)
    assert stored.result == b"result:" + task_request(id="lifecycle", sleep=1.5)
    assert cluster.call_log.calls_per_hash() == {task.hash: 1}


def test_processor_exception_becomes_error_text(cluster: Cluster, scheduler) -> None:  # type: ignore[no-untyped-def]
    cluster.start_worker(concurrency=1)
    uuid = scheduler.add_task(task_request(fail="the input is upside down"))
    wait_until(lambda: finished(scheduler, uuid), 30, message="finished")

    task = scheduler.get_task(uuid)
    assert task.status == TaskStatus.ERROR
    assert task.error == "RuntimeError: the input is upside down"
    assert task.result_size is None


def test_hung_processor_is_stopped_at_the_time_limit(
    cluster: Cluster, scheduler
) -> None:  # type: ignore[no-untyped-def]
    cluster.configure(scheduler_task_time_limit=2)
    worker = cluster.start_worker(concurrency=1)
    uuid = scheduler.add_task(task_request(hang=True))
    wait_until(lambda: finished(scheduler, uuid), 30, message="time limit")

    task = scheduler.get_task(uuid)
    assert task.status == TaskStatus.ERROR
    assert "SCHEDULER_TASK_TIME_LIMIT=2 s" in task.error
    # The pool replaced the killed child, and the worker goes on with the next task.
    after = scheduler.add_task(task_request(id="after the hang"))
    wait_until(lambda: finished(scheduler, after), 30, message="next task")
    assert scheduler.get_task(after).status == TaskStatus.DONE
    assert worker.process.poll() is None


def test_worker_with_a_processor_it_cannot_build_refuses_to_start(
    cluster: Cluster, scheduler
) -> None:  # type: ignore[no-untyped-def]
    uuid = scheduler.add_task(task_request(id="waits for a good worker"))
    cluster.configure(scheduler_processor="no_such_module:Nothing")
    broken = cluster.start_worker(concurrency=1, wait=False)

    assert broken.wait(60) != 0
    assert "cannot import 'no_such_module'" in broken.log_tail(80)
    # It claimed nothing: the task waits, untouched, for a worker that can run it.
    task = scheduler.get_task(uuid)
    assert task.status == TaskStatus.QUEUED and task.attempts == 0
