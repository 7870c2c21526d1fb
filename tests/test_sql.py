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
