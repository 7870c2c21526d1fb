"""Hand-written statements on PostgreSQL, with parameters bound by the server.

The hot steps (admission, claim, the hand-over) each run as one call of a PL/pgSQL
function created by a migration: one round trip where the ORM needs four to six, and no
queryset to build and compile per call. They go through a cursor of psycopg's own
rather than Django's: Django's backend binds parameters on the client, which writes
``bytea`` into the SQL text as hex (two bytes of SQL per byte of request), and reads it
back as hex. This cursor sends bytes as bytes and, with ``binary=True``, receives them
so.

Bytes over ``INLINE_BYTES`` move in chunks of ``CHUNK_BYTES`` instead (``bytes_argument``
and ``read_bytes``): in one piece, psycopg and libpq each keep a copy of the whole value
in flight, so a 64 MiB request would cost a process three times its size.

Only PostgreSQL has these functions; ``is_postgresql`` tells callers when to take their
ORM path instead (SQLite, for ``make run`` without services).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal

import psycopg
from django.db import connections, transaction
from psycopg.pq import TransactionStatus

INLINE_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

_UPLOAD_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS scheduler_upload (n integer, chunk bytea)
ON COMMIT DELETE ROWS
"""
_UPLOADED = "(SELECT string_agg(chunk, ''::bytea ORDER BY n) FROM scheduler_upload)"


def is_postgresql(using: str = "default") -> bool:
    return connections[using].vendor == "postgresql"


@contextmanager
def _cursor(
    using: str, cursor_class: type[psycopg.Cursor[Any]] = psycopg.Cursor
) -> Iterator[psycopg.Cursor[Any]]:
    """A server-binding cursor (or one of ``cursor_class``) on ``using``'s Django
    connection.

    As Django's own cursors do, a connection that failed its health check
    (``CONN_HEALTH_CHECKS``: the server restarted, the link dropped) is replaced first,
    and database errors come out as Django's exception classes, marking the connection
    for Django's health checks. A psycopg.Cursor binds on the server whatever the
    connection's default cursor class (Django sets psycopg.ClientCursor). Closing it
    frees libpq's copy of the rows: a 64 MiB request must not be held twice for as long
    as its task runs.
    """
    connection = connections[using]
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        cursor_class(connection.connection) as cursor,
    ):
        yield cursor


def fetch(using: str, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Run one statement on ``using``'s connection; its rows, loaded from binary.

    The statement joins the connection's transaction, if any (an ``atomic`` block), as
    Django's own queries do.
    """
    with _cursor(using) as cursor:
        cursor.execute(query, params, binary=True)
        return cursor.fetchall() if cursor.description is not None else []


# The largest request ``fetch_before_commit`` takes: its parameters travel inside the
# SQL text, bytes as hex, twice their size.
BEFORE_COMMIT_MAX_BYTES = 64 * 1024

# How long a session may sit in a transaction of ``fetch_before_commit`` between its
# statement and its commit. The gap is the caller's own code (a write to Redis), well
# under a millisecond; a process frozen in it (SIGSTOP, a long pause) holds the
# statement's locks, which may be every replica's admission lock, until this ends its
# session, instead of the connection's general limit (a third of the lease).
BEFORE_COMMIT_IDLE_LIMIT = "1s"


def can_fetch_before_commit(using: str, request_bytes: int) -> bool:
    """Whether ``fetch_before_commit`` takes a statement carrying ``request_bytes`` of
    bytes on ``using`` now: small enough, and no transaction open that it would end."""
    connection = connections[using]
    return (
        request_bytes <= BEFORE_COMMIT_MAX_BYTES
        and connection.get_autocommit()
        and not connection.in_atomic_block
    )


@contextmanager
def fetch_before_commit(
    using: str, query: str, params: tuple[Any, ...]
) -> Iterator[list[tuple[Any, ...]]]:
    """Run one statement in a transaction of its own; the block runs before its commit.

    For work that must follow the statement's answer but need not wait for its commit
    (which, with ``synchronous_commit``, waits for the disk): the statement's locks are
    held through the block, and what it wrote is visible to others only after it.

    ``BEGIN``, the transaction's idle limit and the statement go out as one query
    string, in one round trip, with the parameters bound on the client (keep them
    small: ``BEFORE_COMMIT_MAX_BYTES``). Not in psycopg's pipeline mode, which would
    save the quoting: the server then arms no idle-in-transaction timer at all after
    the batch (seen here on PostgreSQL 15), so a client frozen before its commit would
    hold its locks for as long as it stays frozen.

    Whatever ends the block early (an exception, ``KeyboardInterrupt``), or a failed
    commit, rolls the transaction back, so the connection is never left inside it.
    Only on a connection in autocommit mode outside any ``atomic`` block, whose
    transaction this would otherwise end.
    """
    if not can_fetch_before_commit(using, 0):
        raise RuntimeError("fetch_before_commit inside a transaction")
    with _cursor(using, psycopg.ClientCursor) as cursor:
        raw = cursor.connection
        committed = False
        try:
            cursor.execute(
                "BEGIN; "
                "SELECT set_config('idle_in_transaction_session_timeout', %s, true); "
                + query,
                (BEFORE_COMMIT_IDLE_LIMIT, *params),
            )
            cursor.nextset()  # past BEGIN's result and set_config's
            cursor.nextset()
            rows = cursor.fetchall() if cursor.description is not None else []
            yield rows
            try:
                raw.commit()
            except psycopg.errors.IdleInTransactionSessionTimeout as exc:
                # The server ended the session at the limit above: to the caller, a
                # lost connection (gRPC's UNAVAILABLE), not an internal error.
                raise psycopg.OperationalError(str(exc).strip()) from exc
            committed = True
        finally:
            if not committed and raw.info.transaction_status != TransactionStatus.IDLE:
                with suppress(psycopg.Error):  # a broken connection: its error says so
                    raw.rollback()


@contextmanager
def bytes_argument(
    using: str, data: bytes | None
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The SQL expression and parameters that pass ``data`` to a statement.

    Small values are a parameter. A large one is copied in chunks into a temporary
    table of this connection first, and the expression gathers it on the server; the
    statement must then run inside this block, which holds the transaction the chunks
    live in (the temporary table empties itself on commit).
    """
    if data is None or len(data) <= INLINE_BYTES:
        yield "%s::bytea", (data,)
        return
    with transaction.atomic(using=using):
        view = memoryview(data)
        with _cursor(using) as cursor:
            cursor.execute(_UPLOAD_TABLE)
            copy_rows = "COPY scheduler_upload (n, chunk) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(copy_rows) as copy:
                copy.set_types(["integer", "bytea"])
                for n, start in enumerate(range(0, len(data), CHUNK_BYTES)):
                    copy.write_row((n, view[start : start + CHUNK_BYTES]))
        yield _UPLOADED, ()


def read_bytes(using: str, column: Literal["request", "result"], uuid: str) -> bytes:
    """One task's ``request`` or ``result``, read in chunks of ``CHUNK_BYTES``.

    One statement, so one snapshot: the chunks are of one value. For a value the
    caller knows is there (a null reads as empty).
    """
    query = (
        f"SELECT substring({column} FROM s FOR %s) FROM scheduler_task, "
        f"generate_series(1, octet_length({column}), %s) AS s "
        "WHERE uuid = %s::uuid ORDER BY s"
    )
    with _cursor(using) as cursor:
        chunks = [
            chunk
            for (chunk,) in cursor.stream(
                query, (CHUNK_BYTES, CHUNK_BYTES, uuid), binary=True
            )
        ]
    return b"".join(chunks)
