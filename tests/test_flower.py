"""Flower against the broker: it lists the worker, and each task under our UUID.

Celery's task id is the task's UUID, so Flower's task list is searchable by it, with the
task name and the UUID in the arguments. The same holds after the broker's Redis is
flushed and after it restarts: on Redis, Celery sends events and remote control
through fanout exchanges, which kombu implements with PUB/SUB and no stored binding,
and each ``inspect`` declares its reply queue again. This test is what would notice if
an upgrade changed that.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tasks_app.scheduler import get_scheduler
from tests.harness import CELERY, ROOT, Cluster, free_port, task_request, wait_until


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Flower:
    def __init__(self, base: str) -> None:
        self.base = base

    def workers(self) -> dict[str, Any]:
        """Flower's worker list, refreshed through ``inspect`` (remote control)."""
        try:
            workers: dict[str, Any] = get_json(f"{self.base}/api/workers?refresh=1")
        except (OSError, ValueError):
            return {}
        return workers

    def task(self, uuid: str) -> dict[str, Any] | None:
        """What Flower knows of a task, from the events it captured."""
        try:
            tasks: dict[str, Any] = get_json(f"{self.base}/api/tasks")
        except (OSError, ValueError):
            return None
        return tasks.get(uuid)


@pytest.fixture
def flower(cluster: Cluster) -> Iterator[Flower]:
    port = free_port()
    log = (cluster.workdir / "flower.log").open("wb")
    process = subprocess.Popen(
        [CELERY, "-A", "scheduler_project", "flower", f"--port={port}"],
        cwd=ROOT,
        # Flower's API answers without authentication only when told to.
        env={**cluster.env, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield Flower(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def finish_one(cluster: Cluster, name: str) -> str:
    scheduler = get_scheduler()
    uuid = str(scheduler.add_task(task_request(id=name, sleep=0.1)))
    wait_until(
        lambda: scheduler.get_task(uuid).status == "done",
        30,
        message=f"task {uuid} to finish\n{cluster.logs()}",
    )
    return uuid


def assert_flower_shows(flower: Flower, cluster: Cluster, uuid: str) -> None:
    wait_until(
        lambda: (flower.task(uuid) or {}).get("state") == "SUCCESS",
        20,
        message=f"Flower to show task {uuid} finished: {flower.task(uuid)}",
    )
    task = flower.task(uuid)
    assert task is not None
    assert task["name"] == "tasks_app.run_task"
    assert task["uuid"] == uuid
    assert uuid in task["args"]
    assert uuid in task["result"]  # the UUIDs this message ran: {'ran': [...]}
    assert task["worker"].startswith("w1@")


def test_flower_lists_the_worker_and_finished_tasks_by_our_uuid(
    cluster: Cluster, flower: Flower
) -> None:
    get_scheduler.cache_clear()
    cluster.start_worker(concurrency=1)
    wait_until(lambda: flower.workers(), 40, message="Flower to list a worker")
    (name,) = flower.workers()
    assert name.startswith("w1@")

    assert_flower_shows(flower, cluster, finish_one(cluster, "first"))


def test_flower_keeps_seeing_workers_and_tasks_after_a_redis_flush_and_restart(
    cluster: Cluster, flower: Flower, redis_server: Any
) -> None:
    get_scheduler.cache_clear()
    cluster.start_worker(concurrency=1)
    wait_until(lambda: flower.workers(), 40, message="Flower to list a worker")
    assert_flower_shows(flower, cluster, finish_one(cluster, "before"))

    redis_server.flushall()
    assert_flower_shows(flower, cluster, finish_one(cluster, "after-flush"))
    assert any(name.startswith("w1@") for name in flower.workers())

    redis_server.restart()
    # Flower and the worker reconnect on their own; the task may wait for the
    # reconciler to publish it again if its message went out before they did.
    assert_flower_shows(flower, cluster, finish_one(cluster, "after-restart"))
    wait_until(lambda: flower.workers(), 30, message="Flower to list the worker again")


def test_a_message_whose_task_another_ran_ends_in_flower_too(
    cluster: Cluster, flower: Flower
) -> None:
    get_scheduler.cache_clear()
    cluster.configure(scheduler_num_workers=1)
    cluster.start_worker(concurrency=1)
    wait_until(lambda: flower.workers(), 40, message="Flower to list a worker")
    scheduler = get_scheduler()
    # One slot: the first message runs all three, handing the slot on; the other two
    # messages find their task finished and run nothing.
    uuids = [
        str(scheduler.add_task(task_request(id=f"chain {i}", sleep=0.5)))
        for i in range(3)
    ]
    wait_until(
        lambda: all(scheduler.get_task(u).status == "done" for u in uuids),
        30,
        message="all three done",
    )
    for uuid in uuids:
        wait_until(
            lambda u=uuid: (flower.task(u) or {}).get("state") == "SUCCESS",
            20,
            message=f"Flower to show {uuid} ended: {flower.task(uuid)}",
        )
    results = [str(flower.task(uuid)["result"]) for uuid in uuids]
    assert sum("nothing to run" in result for result in results) >= 1, results
