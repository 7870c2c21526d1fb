"""Session limits on PostgreSQL: a client frozen inside a transaction holds up no one.

Every process's connections carry them (``settings.base._postgres_session_limits``):
the server ends a session idle in an open transaction after a third of a lease, and
TCP keepalives end a connection to a server that went silent.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading

import pytest
from django.conf import settings
from django.db import connection, connections

from scheduler_project.settings.base import _postgres_session_limits
from tasks_app import leases
from tasks_app.scheduler import Scheduler
from tests.harness import ROOT, task_request, wait_until

IDLE_MS = max(1000, int(settings.SCHEDULER_LEASE_SECONDS * 1000 / 3))

# A process of the deployment's own (Django's connection, the settings' limits) that
# takes the slot lock inside a transaction and stops there, as a worker frozen in the
# middle of a recovery would.
HOLDER = """
import django
django.setup()
from django.db import connection, transaction
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute("SELECT scheduler_lock_slots()")
    print("locked", flush=True)
    input()
"""


@pytest.mark.django_db
def test_every_connection_carries_the_limits() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setting::integer FROM pg_settings "
            "WHERE name = 'idle_in_transaction_session_timeout'"
        )
        (idle_ms,) = cursor.fetchone()
    assert idle_ms == IDLE_MS
    parameters = connection.connection.info.get_parameters()
    assert parameters["keepalives"] == "1"
    assert parameters["tcp_user_timeout"] == "60000"


def test_the_urls_own_options_come_after_ours() -> None:
    options = _postgres_session_limits({"options": "-c search_path=other"}, 30.0)
    assert options["options"] == (
        "-c idle_in_transaction_session_timeout=10000 -c search_path=other"
    )
    assert _postgres_session_limits({}, 1.5)["options"] == (
        "-c idle_in_transaction_session_timeout=1000"
    )


@pytest.mark.django_db(transaction=True)
def test_a_frozen_holder_of_the_slot_lock_is_ended_and_claims_go_on(
    scheduler: Scheduler, live_database_url: str
) -> None:
    uuid = scheduler.add_task(task_request(id="claimed past a frozen lock holder"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": live_database_url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    claimed: list[leases.Claim | None] = []

    def claim() -> None:
        try:
            claimed.append(
                leases.claim(uuid, worker="test", num_workers=2, lease_seconds=60)
            )
        finally:
            connections.close_all()

    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready and holder.stdout.readline() == "locked\n", (
            "the holder never locked"
        )
        os.kill(holder.pid, signal.SIGSTOP)
        claimer = threading.Thread(target=claim, daemon=True)
        claimer.start()
        wait_until(
            _a_claim_waits_for_a_lock,
            IDLE_MS / 1000,
            interval=0.02,
            message="the claim to wait for the frozen session's slot lock",
        )
        claimer.join(IDLE_MS / 1000 + 10)
        assert claimed and claimed[0] is not None and claimed[0].uuid == uuid, (
            "the claim still waits for the slot lock of the frozen session"
        )
        wait_until(lambda: not _idle_in_transaction(), 5, message="the session to end")
    finally:
        holder.kill()
        holder.wait()


def _another_session(condition: str) -> bool:
    """Whether a session of the test database other than this one meets ``condition``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            f"AND pid <> pg_backend_pid() AND {condition}"
        )
        return bool(cursor.fetchone()[0])


def _idle_in_transaction() -> bool:
    return _another_session("state = 'idle in transaction'")


def _a_claim_waits_for_a_lock() -> bool:
    return _another_session(
        "wait_event_type = 'Lock' AND query LIKE '%%scheduler_claim(%%'"
    )
