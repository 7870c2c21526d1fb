"""Reservations: a slot that will be busy a little longer holds its next task.

When every slot is busy, a claim or hand-over also reserves the oldest queued task for
its process: the row stays ``queued``, with that process as ``lease_owner`` and a short
``lease_expires_at`` (``p_reserve_seconds``). No other claim or hand-over takes a task
while its reservation is live, so the reserving process may start it the moment its
current task ends, and record the end of that task while the next one already runs:
the write is off the path between two processor calls. A reservation is consumed by the
hand-over of its own process (``p_reserved``), given back by a finish that lets the
slot go, or lapses; a lapsed one is any slot's to take, and the reconciler publishes it
again when a slot is free (``leases.redispatch_stale``).

A reservation is only made when no slot is free, so that a task is never held back
from a slot that could start it now; one made just before a slot frees can still make
its task wait for its reserver, at most the reservation time and a reconciler tick.
Requests over ``p_inline_bytes`` are not reserved: they come back in chunks, which is
not worth hiding.
"""

import importlib

from django.db import migrations

CREATE = r"""
DROP FUNCTION IF EXISTS scheduler_finish(
    uuid, integer, text, text, bytea, text, boolean, text, text, double precision,
    integer
);
DROP FUNCTION IF EXISTS scheduler_claim(
    uuid, integer, text, text, double precision, integer
);

CREATE OR REPLACE FUNCTION scheduler_take_queued(p_preferred uuid) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_uuid uuid;
BEGIN
    -- Row-locked, skipping rows that another claim or hand-over is taking right now,
    -- and rows another process has reserved (see the migration's docstring).
    IF p_preferred IS NOT NULL THEN
        SELECT t.uuid INTO v_uuid FROM scheduler_task t
            WHERE t.uuid = p_preferred AND t.status = 'queued'
                AND (t.lease_owner = '' OR t.lease_expires_at IS NULL
                     OR t.lease_expires_at <= statement_timestamp())
            FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            RETURN v_uuid;
        END IF;
    END IF;
    SELECT t.uuid INTO v_uuid FROM scheduler_task t
        WHERE t.status = 'queued'
            AND (t.lease_owner = '' OR t.lease_expires_at IS NULL
                 OR t.lease_expires_at <= statement_timestamp())
        ORDER BY t.created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
    RETURN v_uuid;
END
$fn$;

CREATE OR REPLACE FUNCTION scheduler_reserve(
    p_owner text,
    p_num_workers integer,
    p_reserve_seconds double precision,
    p_inline_bytes integer,
    OUT reserved_uuid uuid,
    OUT reserved_hash text,
    OUT reserved_attempts integer,
    OUT reserved_request bytea
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_processing bigint;
    v_uuid uuid;
BEGIN
    IF p_reserve_seconds <= 0 THEN
        RETURN;
    END IF;
    -- With a slot free, the task's own message or the next finish starts it sooner.
    SELECT count(*) INTO v_processing FROM scheduler_task t
        WHERE t.status = 'processing';
    IF v_processing < p_num_workers THEN
        RETURN;
    END IF;
    v_uuid := scheduler_take_queued(NULL);
    IF v_uuid IS NULL THEN
        RETURN;
    END IF;
    UPDATE scheduler_task t SET
        lease_owner = p_owner,
        lease_expires_at =
            statement_timestamp() + make_interval(secs => p_reserve_seconds)
    WHERE t.uuid = v_uuid AND octet_length(t.request) <= p_inline_bytes
    RETURNING t.uuid, t.hash, t.attempts, t.request
    INTO reserved_uuid, reserved_hash, reserved_attempts, reserved_request;
END
$fn$;

CREATE OR REPLACE FUNCTION scheduler_claim(
    p_preferred uuid,
    p_num_workers integer,
    p_owner text,
    p_worker text,
    p_lease_seconds double precision,
    p_inline_bytes integer,
    p_reserve_seconds double precision,
    OUT task_uuid uuid,
    OUT task_hash text,
    OUT task_attempts integer,
    OUT task_request bytea,
    OUT reserved_uuid uuid,
    OUT reserved_hash text,
    OUT reserved_attempts integer,
    OUT reserved_request bytea
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_processing bigint;
    v_uuid uuid;
BEGIN
    -- Held to the commit: no other claim counts the slots between this count and
    -- this start, so the cap holds across every worker.
    PERFORM scheduler_lock_slots();
    SELECT count(*) INTO v_processing FROM scheduler_task t
        WHERE t.status = 'processing';
    IF v_processing >= p_num_workers THEN
        RETURN;
    END IF;
    v_uuid := scheduler_take_queued(p_preferred);
    IF v_uuid IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO task_uuid, task_hash, task_attempts, task_request
        FROM scheduler_start_task(
            v_uuid, p_owner, p_worker, p_lease_seconds, p_inline_bytes
        );
    SELECT * INTO reserved_uuid, reserved_hash, reserved_attempts, reserved_request
        FROM scheduler_reserve(
            p_owner, p_num_workers, p_reserve_seconds, p_inline_bytes
        );
END
$fn$;

CREATE OR REPLACE FUNCTION scheduler_finish(
    p_uuid uuid,
    p_attempt integer,
    p_owner text,
    p_status text,
    p_result bytea,
    p_error text,
    p_take_next boolean,
    p_reserved uuid,
    p_next_owner text,
    p_worker text,
    p_lease_seconds double precision,
    p_inline_bytes integer,
    p_num_workers integer,
    p_reserve_seconds double precision,
    OUT recorded boolean,
    OUT next_uuid uuid,
    OUT next_hash text,
    OUT next_attempts integer,
    OUT next_request bytea,
    OUT wake_uuid uuid,
    OUT reserved_uuid uuid,
    OUT reserved_hash text,
    OUT reserved_attempts integer,
    OUT reserved_request bytea
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_uuid uuid;
BEGIN
    -- Guarded by the lease: a task whose lease expired went back to the queue, and
    -- another attempt records it; this outcome is not written, nor the slot passed on.
    -- A reservation of this process stays as it is, and lapses.
    UPDATE scheduler_task t SET
        status = p_status,
        result = p_result,
        result_size = octet_length(p_result),
        error = p_error,
        finished_at = statement_timestamp(),
        lease_owner = '',
        lease_expires_at = NULL
    WHERE t.uuid = p_uuid
        AND t.status = 'processing'
        AND t.attempts = p_attempt
        AND t.lease_owner = p_owner;
    recorded := FOUND;
    IF NOT recorded THEN
        RETURN;
    END IF;

    IF NOT p_take_next THEN
        -- The slot is let go (the worker is stopping), and its reservation with it.
        -- An admission that saw every slot busy published nothing, and holds this
        -- lock from that count to its commit: under the lock, either it saw this slot
        -- free, or its task is visible here and the caller publishes a message for
        -- the oldest one.
        IF p_reserved IS NOT NULL THEN
            UPDATE scheduler_task t SET lease_owner = '', lease_expires_at = NULL
                WHERE t.uuid = p_reserved AND t.status = 'queued'
                    AND t.lease_owner = p_next_owner;
        END IF;
        PERFORM scheduler_lock_slots();
        SELECT t.uuid INTO wake_uuid FROM scheduler_task t
            WHERE t.status = 'queued'
                AND (t.lease_owner = '' OR t.lease_expires_at IS NULL
                     OR t.lease_expires_at <= statement_timestamp())
            ORDER BY t.created_at
            LIMIT 1;
        RETURN;
    END IF;

    -- The hand-over: the number of processing tasks does not change, so no lock. This
    -- process's own reservation first, live or lapsed, if nobody took it meanwhile.
    -- Waiting for its row lock, not skipping it: this process may be running it
    -- already, and whoever holds the lock of a live reservation leaves it queued (a
    -- lapsed one may be taken, and then this process's run of it is not recorded).
    IF p_reserved IS NOT NULL THEN
        SELECT t.uuid INTO v_uuid FROM scheduler_task t
            WHERE t.uuid = p_reserved AND t.status = 'queued'
                AND t.lease_owner = p_next_owner
            FOR UPDATE;
    END IF;
    IF v_uuid IS NULL THEN
        v_uuid := scheduler_take_queued(NULL);
    END IF;
    IF v_uuid IS NULL THEN
        -- The queue looks empty; a task admitted a moment ago may have had its
        -- message refused by a claim that saw this slot still busy, or none at all.
        -- Under the slot lock that admission or claim has either committed (and its
        -- task is visible now) or not counted yet (and it will see this slot free).
        PERFORM scheduler_lock_slots();
        v_uuid := scheduler_take_queued(NULL);
    END IF;
    IF v_uuid IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO next_uuid, next_hash, next_attempts, next_request
        FROM scheduler_start_task(
            v_uuid, p_next_owner, p_worker, p_lease_seconds, p_inline_bytes
        );
    SELECT * INTO reserved_uuid, reserved_hash, reserved_attempts, reserved_request
        FROM scheduler_reserve(
            p_next_owner, p_num_workers, p_reserve_seconds, p_inline_bytes
        );
END
$fn$;
"""

# Back to 0005's functions: its migration's CREATE makes them again.
DROP = """
DROP FUNCTION IF EXISTS scheduler_finish(
    uuid, integer, text, text, bytea, text, boolean, uuid, text, text,
    double precision, integer, integer, double precision
);
DROP FUNCTION IF EXISTS scheduler_claim(
    uuid, integer, text, text, double precision, integer, double precision
);
DROP FUNCTION IF EXISTS scheduler_reserve(text, integer, double precision, integer);
"""


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        slot_functions = importlib.import_module(
            "tasks_app.migrations.0005_slot_functions"
        )
        schema_editor.execute(DROP)
        schema_editor.execute(slot_functions.CREATE)


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0005_slot_functions")]
    operations = [migrations.RunPython(create_functions, drop_functions)]
