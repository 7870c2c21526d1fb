"""Hand-written statements on PostgreSQL, with parameters bound by the server.

The hot steps (admission, claim, the hand-over) each run as one call of a PL/pgSQL
function created by a migration: one round trip where the ORM needs four to six, and no
queryset to build and compile per call. They go through a cursor of psycopg's own
rather than Django's: Django's backend binds parameters on the client, which writes
``bytea`` into the SQL text as hex (two bytes of SQL per byte of request), and reads it
back as hex. This cursor sends bytes as bytes and, with ``binary=True``, receives them
so.

Only PostgreSQL has these functions; ``is_postgresql`` tells callers when to take their
ORM path instead (SQLite, for ``make run`` without services).
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connections


def is_postgresql(using: str = "default") -> bool:
    return connections[using].vendor == "postgresql"


def fetch(using: str, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Run one statement on ``using``'s connection; its rows, loaded from binary.

    The statement joins the connection's transaction, if any (an ``atomic`` block), as
    Django's own queries do; database errors come out as Django's exception classes, and
    mark the connection so that Django's health checks see them.
    """
    connection = connections[using]
    connection.ensure_connection()
    # A psycopg.Cursor binds on the server whatever the connection's default cursor
    # class (Django sets psycopg.ClientCursor).
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
    ):
        cursor.execute(query, params, binary=True)
        rows = cursor.fetchall() if cursor.description is not None else []
    # The cursor is closed here, which frees libpq's copy of the rows: a 64 MiB
    # request must not be held twice for as long as the task runs.
    return rows
