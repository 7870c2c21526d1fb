"""The server-binding statements of ``tasks_app.sql``: a dropped connection is replaced as
Django's own cursors replace it, and large bytes cross in chunks, byte-exact."""

from __future__ import annotations

import os

import psycopg
import pytest
from django.db import connection

from tasks_app import sql
from tasks_app.models import TaskRecord
from tasks_app.scheduler import Scheduler

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_connection_the_server_dropped_is_replaced_before_the_statement(
    live_database_url: str,
) -> None:
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    assert sql.fetch("default", "SELECT 1", ()) == [(1,)]
    backend = connection.connection.info.backend_pid
    with psycopg.connect(live_database_url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (backend,))
    # As at the start of each request or task: Django re-checks health once per cycle.
    connection.health_check_done = False

    assert sql.fetch("default", "SELECT 2", ()) == [(2,)]
    assert connection.connection.info.backend_pid != backend


def test_a_request_over_the_inline_size_is_stored_and_read_back_exactly(
    scheduler: Scheduler,
) -> None:
    request = os.urandom(sql.INLINE_BYTES + 3 * sql.CHUNK_BYTES + 5) + b"\x00"
    uuid = scheduler.add_task(request)

    row = TaskRecord.objects.get(uuid=uuid)
    assert row.request_size == len(request)
    assert bytes(row.request) == request
    assert sql.read_bytes("default", "request", uuid) == request
    # The temporary table of chunks empties itself with the admission's commit.
    assert sql.fetch("default", "SELECT count(*) FROM scheduler_upload", ()) == [(0,)]


def test_the_database_thread_checks_its_connection_after_an_idle_pause_or_an_error(
    live_database_url: str,
) -> None:
    from django.db import InterfaceError, OperationalError, connections

    from tasks_app import db_thread

    def pid() -> int:
        return int(connections["default"].connection.info.backend_pid)

    def fetch_after_look(query: str) -> tuple[list[tuple[object, ...]], int]:
        db_thread.look_at_connections()
        return sql.fetch("default", query, ()), pid()

    try:
        _, first = db_thread.submit(fetch_after_look, "SELECT 1").result()
        with psycopg.connect(live_database_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (first,))

        # Used a moment ago: no check, so the dropped connection fails the statement
        # (the callers' error paths replace it), and marks itself for the next look.
        with pytest.raises((OperationalError, InterfaceError)):
            db_thread.submit(fetch_after_look, "SELECT 2").result()
        rows, second = db_thread.submit(fetch_after_look, "SELECT 3").result()
        assert rows == [(3,)] and second != first

        # Idle past the threshold: checked first, and replaced before the statement.
        with psycopg.connect(live_database_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (second,))
        db_thread._last_used -= db_thread.IDLE_CHECK_SECONDS + 1
        rows, third = db_thread.submit(fetch_after_look, "SELECT 4").result()
        assert rows == [(4,)] and third not in (first, second)
    finally:
        db_thread.submit(connections.close_all).result()
