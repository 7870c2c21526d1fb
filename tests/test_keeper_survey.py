"""The lease keeper's one look per tick: what it reports, and what the tick skips.

Every tick of every worker asks ``leases.survey``; recovery and redispatch run only
when it says they have work. So it must never say "nothing" where they would act: each
case below checks its answer against what those functions then do.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app import keeper, leases
from tasks_app.config import scheduler_config
from tasks_app.models import Status, TaskRecord
from tasks_app.scheduler import Scheduler
from tests.harness import hold_slot, task_request
from tests.test_reservations import finish, lapse, reserve_behind

pytestmark = pytest.mark.django_db(transaction=True)

STALE_SECONDS = 5.0
TIME_LIMIT_SECONDS = 3600.0


def survey(
    num_workers: int = 2, time_limit: float = TIME_LIMIT_SECONDS
) -> leases.KeeperSurvey:
    return leases.survey(leases.boot_id(), time_limit, num_workers, STALE_SECONDS)


def age_message(uuid: str, seconds: float = 3600) -> None:
    TaskRecord.objects.filter(uuid=uuid).update(
        dispatched_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_quiet_table_needs_nothing(scheduler: Scheduler) -> None:
    assert survey() == leases.KeeperSurvey([], expired=False, stale=False)
    scheduler.add_task(task_request(id="fresh"))  # its message is recent

    assert survey() == leases.KeeperSurvey([], expired=False, stale=False)
    assert leases.redispatch_stale(2, stale_seconds=STALE_SECONDS) == []


def test_it_lists_this_boots_leases_and_which_are_over_the_time_limit(
    scheduler: Scheduler,
) -> None:
    held = hold_slot(scheduler, "held")
    TaskRecord.objects.filter(uuid=held.uuid).update(
        started_at=timezone.now() - timedelta(seconds=30)
    )

    (lease,) = survey().held
    assert (lease.uuid, lease.owner, lease.attempt) == (held.uuid, held.owner, 1)
    assert not lease.over_time_limit
    (late,) = survey(time_limit=10).held
    assert late.over_time_limit
    assert leases.survey("another-boot", 10, 2, STALE_SECONDS).held == []


def test_an_expired_lease_is_reported_and_recovered(scheduler: Scheduler) -> None:
    held = hold_slot(scheduler, "held")
    assert not survey().expired

    lapse(held.uuid)

    assert survey().expired
    assert [uuid for uuid, _ in leases.recover_expired(5)] == [held.uuid]
    assert not survey().expired


def test_a_stale_message_counts_only_while_a_slot_is_free(scheduler: Scheduler) -> None:
    hold_slot(scheduler, "busy")
    waiting = scheduler.add_task(task_request(id="waiting"))
    age_message(waiting)

    assert not survey(num_workers=1).stale
    assert leases.redispatch_stale(1, stale_seconds=STALE_SECONDS) == []
    assert survey(num_workers=2).stale
    assert leases.redispatch_stale(2, stale_seconds=STALE_SECONDS) == [waiting]
    assert not survey(num_workers=2).stale  # its message is new again


def test_a_live_reservation_is_not_stale_and_a_lapsed_one_is(
    scheduler: Scheduler,
) -> None:
    other, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    reserved = mine.reserved.uuid
    assert finish(other, reserve_seconds=0) is None  # a slot is free now
    age_message(reserved)

    assert not survey().stale
    assert leases.redispatch_stale(2, stale_seconds=STALE_SECONDS) == []

    lapse(reserved)
    TaskRecord.objects.filter(uuid=reserved).update(dispatched_at=timezone.now())

    assert survey().stale
    assert leases.redispatch_stale(2, stale_seconds=STALE_SECONDS) == [reserved]


def test_a_quiet_tick_runs_neither_recovery_nor_redispatch(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_recover, real_redispatch = leases.recover_expired, leases.redispatch_stale

    def recover(*args: object, **kwargs: object) -> object:
        calls.append("recover")
        return real_recover(*args, **kwargs)  # type: ignore[arg-type]

    def redispatch(*args: object, **kwargs: object) -> object:
        calls.append("redispatch")
        return real_redispatch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(leases, "recover_expired", recover)
    monkeypatch.setattr(leases, "redispatch_stale", redispatch)
    tick = keeper.LeaseKeeper(scheduler_config()).tick

    tick()
    assert calls == []

    elsewhere = hold_slot(scheduler, "another worker's").uuid
    TaskRecord.objects.filter(uuid=elsewhere).update(lease_owner="another-boot:1")
    lapse(elsewhere)
    tick()
    assert calls == ["recover"]
    assert TaskRecord.objects.get(status=Status.QUEUED).attempts == 1


def test_a_tick_that_finds_a_dead_process_recovers_and_publishes_at_once(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead pool process's lease ends in the tick that finds it; its reservation,
    which the survey saw as live, is published in that same tick."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other, mine = reserve_behind(scheduler, "mine", "reserved")
    assert mine.reserved is not None
    owner = f"{leases.boot_id()}:{dead.pid}"
    TaskRecord.objects.filter(uuid__in=[mine.uuid, mine.reserved.uuid]).update(
        lease_owner=owner
    )
    TaskRecord.objects.filter(uuid=other.uuid).update(lease_owner="another-boot:1")
    published: list[list[str]] = []
    monkeypatch.setattr(
        leases,
        "publish_on_commit",
        lambda uuids, using="default": published.append(uuids),
    )
    assert not survey().stale  # the reservation is live, its slot busy

    keeper.LeaseKeeper(scheduler_config()).tick()

    assert TaskRecord.objects.get(uuid=mine.uuid).status == Status.QUEUED
    assert [mine.reserved.uuid] in published, published


def test_it_counts_the_clusters_processing_tasks_whoever_holds_them(
    scheduler: Scheduler,
) -> None:
    hold_slot(scheduler, "here")
    elsewhere = hold_slot(scheduler, "elsewhere").uuid
    TaskRecord.objects.filter(uuid=elsewhere).update(lease_owner="another-boot:1")
    scheduler.add_task(task_request(id="queued"))

    assert survey().processing == 2
    assert len(survey().held) == 1


def test_a_tick_over_the_cap_logs_one_error_a_minute(scheduler: Scheduler) -> None:
    """Processes that disagree on SCHEDULER_NUM_WORKERS let the largest cap win: one
    with a smaller cap is the one that can tell."""
    for name in ("first", "second"):
        hold_slot(scheduler, name)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger(keeper.__name__).addHandler(handler)
    try:
        narrow = keeper.LeaseKeeper(replace(scheduler_config(), num_workers=1))
        narrow.tick()
        narrow.tick()
        keeper.LeaseKeeper(replace(scheduler_config(), num_workers=2)).tick()
    finally:
        logging.getLogger(keeper.__name__).removeHandler(handler)

    [error] = errors
    assert getattr(error, "event", None) == "over_cap"
    assert "2 tasks are processing" in error.getMessage()
    assert "SCHEDULER_NUM_WORKERS=1" in error.getMessage()


def test_live_pids_among_answers_for_this_process_and_its_children_only() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me = os.getpid()
        assert keeper.live_pids(among={me, child.pid}) == {me, child.pid}
        assert keeper.live_pids(among={child.pid}) == {child.pid}
        assert keeper.live_pids(among={os.getppid()}) == set()  # not a child
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped
        assert keeper.live_pids(among={child.pid}) == set()  # a zombie is not alive
        child.wait()
        assert keeper.live_pids(among={child.pid}) == set()
        assert keeper.live_pids(among=set()) == set()
    finally:
        child.kill()
