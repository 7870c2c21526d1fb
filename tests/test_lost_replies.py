"""A hand-over whose commit happened but whose reply never came back.

The database really commits here; only the answer is lost on the way back, as when the
connection drops after the server has sent it: ``sql.fetch`` runs the statement, then
raises the error psycopg gives for a dropped connection. The runner runs in this
process, as a pool process runs it.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError

from tasks_app import leases, runner, sql
from tasks_app.models import Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import task_request

pytestmark = pytest.mark.django_db(transaction=True)


class Echo:
    def process(self, request: bytes) -> bytes:
        return request


def lose_the_reply_of_the_first_finish(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lost: list[str] = []
    fetch = sql.fetch

    def fetch_then_lose(using: str, query: str, params: tuple[Any, ...]) -> Any:
        rows = fetch(using, query, params)
        if "scheduler_finish(" in query and not lost:
            lost.append(str(params[0]))
            raise OperationalError("server closed the connection unexpectedly")
        return rows

    monkeypatch.setattr(sql, "fetch", fetch_then_lose)
    return lost


def run_here(claim: leases.Claim) -> list[str]:
    """The runner in this process, as a pool process with two slots runs it."""
    return runner.run(
        claim,
        Echo(),
        worker="test",
        lease_seconds=60,
        should_stop=lambda: False,
        num_workers=2,
    )


def test_a_task_started_by_a_hand_over_whose_reply_was_lost_goes_back_to_the_queue(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = str(scheduler.add_task(task_request(id="first")))
    second = str(scheduler.add_task(task_request(id="second")))
    claim = leases.claim(first, worker="test", num_workers=2, lease_seconds=60)
    assert claim is not None and claim.uuid == first
    lost = lose_the_reply_of_the_first_finish(monkeypatch)

    ran = run_here(claim)

    assert lost == [first]
    assert ran == [first]
    done = TaskRecord.objects.get(uuid=first)
    assert (done.status, done.result) == (Status.DONE, task_request(id="first"))
    # The lost hand-over had started the second task under this process's lease; this
    # process never ran it, so it must not stay processing, renewed by the keeper.
    orphan = TaskRecord.objects.get(uuid=second)
    assert (orphan.status, orphan.lease_owner) == (Status.QUEUED, "")
    assert orphan.result is None
    # Nothing called its processor: the attempt the lost start counted is not spent.
    assert orphan.attempts == 0

    # And it runs, once, when a slot takes it.
    again = leases.claim(second, worker="test", num_workers=2, lease_seconds=60)
    assert again is not None and again.uuid == second
    assert again.attempt == 1
    assert run_here(again) == [second]
    assert TaskRecord.objects.get(uuid=second).status == Status.DONE


def test_a_lost_start_on_the_last_attempt_leaves_the_task_an_attempt(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers died under it already: the start whose reply was lost is the third
    of three attempts, but it never called the processor, so the task is queued
    again rather than ended in error."""
    first = str(scheduler.add_task(task_request(id="first")))
    last = str(scheduler.add_task(task_request(id="on its last attempt")))
    max_attempts = leases.scheduler_config().max_attempts
    TaskRecord.objects.filter(uuid=last).update(attempts=max_attempts - 1)
    claim = leases.claim(first, worker="test", num_workers=2, lease_seconds=60)
    assert claim is not None and claim.uuid == first
    lose_the_reply_of_the_first_finish(monkeypatch)

    assert run_here(claim) == [first]

    orphan = TaskRecord.objects.get(uuid=last)
    assert (orphan.status, orphan.attempts) == (Status.QUEUED, max_attempts - 1)
