"""A message goes to the broker only after its row is committed, and a lost one is
published again: the worker never looks for a row that is not there yet."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.db import transaction

from tasks_app.interfaces import TaskStatus
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import (
    ROOT,
    Cluster,
    RedisServer,
    broker_messages,
    free_port,
    submit_from_processes,
    task_request,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def test_message_is_sent_only_when_the_transaction_commits(
    cluster: Cluster, scheduler: Scheduler, redis_server: RedisServer
) -> None:
    with transaction.atomic():
        uuid = scheduler.add_task(task_request(id="slow commit"))
        time.sleep(1.5)
        # Inside the caller's transaction: the UUID is known, nothing is published.
        assert broker_messages(redis_server) == 0
    assert broker_messages(redis_server) == 1

    cluster.start_worker(concurrency=1)
    wait_until(
        lambda: scheduler.get_task(uuid).status == TaskStatus.DONE, 30, message="done"
    )


def test_rolled_back_submission_leaves_no_row_and_runs_nothing(
    cluster: Cluster, scheduler: Scheduler, redis_server: RedisServer
) -> None:
    cluster.start_worker(concurrency=1)
    with pytest.raises(Rollback), transaction.atomic():
        scheduler.add_task(task_request(id="rolled back"))
        raise Rollback

    time.sleep(2)
    assert TaskRecord.objects.count() == 0
    assert broker_messages(redis_server) == 0
    assert cluster.call_log.calls() == []


def test_failed_publish_is_published_again_by_the_reconciler(
    cluster: Cluster, scheduler: Scheduler
) -> None:
    dead_broker = {
        **cluster.env,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    [answer] = submit_from_processes(
        dead_broker, [task_request(id="lost message")], 1, 1, start_delay=0.5
    )
    # Accepted: the row is committed even though its message never left.
    assert answer["created"] is True
    uuid = str(answer["uuid"])
    assert scheduler.get_task(uuid).status == TaskStatus.QUEUED

    cluster.start_worker(concurrency=1)
    wait_until(
        lambda: scheduler.get_task(uuid).status == TaskStatus.DONE,
        60,
        message="the reconciler to publish it",
    )
    assert len(cluster.call_log.calls()) == 1


def test_prepare_loads_the_broker_client_without_reaching_the_broker() -> None:
    """Web and gRPC processes warm Celery up at start; a broker that is down must not
    make that fail or wait."""
    script = (
        "import django; django.setup()\n"
        "from scheduler_project.celery import app\n"
        "from tasks_app.dispatch import RUN_TASK, prepare\n"
        "assert not app.finalized\n"
        "prepare()\n"
        "assert app.finalized and RUN_TASK in app.tasks\n"
        "assert 'kombu.transport.redis' in __import__('sys').modules\n"
        "print('prepared')\n"
    )
    env = {
        **os.environ,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "prepared"
    assert "could not prepare" not in done.stderr
