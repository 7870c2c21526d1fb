"""Claim and finish as one PL/pgSQL call each on PostgreSQL (see ``tasks_app.leases``).

The functions are VOLATILE on purpose: in READ COMMITTED each statement in them takes a
fresh snapshot, so the count of processing tasks made after waiting for the slot lock
includes every claim and release that committed while it waited. Each returns exactly
one row (OUT parameters, not a set), so a request is never copied into a tuplestore on
its way out; one over ``p_inline_bytes`` is not returned at all (its task_request is
null), and the caller reads it in chunks. Other databases keep the ORM path and get
nothing here. The slot lock itself, ``scheduler_lock_slots``, comes with 0004, whose
admission takes it too.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION scheduler_take_queued(p_preferred uuid) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_uuid uuid;
BEGIN
    -- Row-locked, skipping rows that another claim or hand-over is taking right now.
    IF p_preferred IS NOT NULL THEN
        SELECT t.uuid INTO v_uuid FROM scheduler_task t
            WHERE t.uuid = p_preferred AND t.status = 'queued'
            FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            RETURN v_uuid;
        END IF;
    END IF;
    SELECT t.uuid INTO v_uuid FROM scheduler_task t
        WHERE t.status = 'queued'
        ORDER BY t.created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
    RETURN v_uuid;
END
$fn$;

CREATE OR REPLACE FUNCTION scheduler_start_task(
    p_uuid uuid,
    p_owner text,
    p_worker text,
    p_lease_seconds double precision,
    p_inline_bytes integer,
    OUT task_uuid uuid,
    OUT task_hash text,
    OUT task_attempts integer,
    OUT task_request bytea
)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    -- statement_timestamp(), as Django's Now() on the ORM path: the database's clock.
    UPDATE scheduler_task t SET
        status = 'processing',
        attempts = t.attempts + 1,
        started_at = statement_timestamp(),
        finished_at = NULL,
        worker = p_worker,
        lease_owner = p_owner,
        lease_expires_at =
            statement_timestamp() + make_interval(secs => p_lease_seconds)
    WHERE t.uuid = p_uuid
    RETURNING t.uuid, t.hash, t.attempts,
        -- The length of a stored value is known without reading it.
        CASE WHEN octet_length(t.request) <= p_inline_bytes THEN t.request END
    INTO task_uuid, task_hash, task_attempts, task_request;
END
$fn$;

CREATE OR REPLACE FUNCTION scheduler_claim(
    p_preferred uuid,
    p_num_workers integer,
    p_owner text,
    p_worker text,
    p_lease_seconds double precision,
    p_inline_bytes integer,
    OUT task_uuid uuid,
    OUT task_hash text,
    OUT task_attempts integer,
    OUT task_request bytea
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
    p_next_owner text,
    p_worker text,
    p_lease_seconds double precision,
    p_inline_bytes integer,
    OUT recorded boolean,
    OUT next_uuid uuid,
    OUT next_hash text,
    OUT next_attempts integer,
    OUT next_request bytea,
    OUT wake_uuid uuid
)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_uuid uuid;
BEGIN
    -- Guarded by the lease: a task whose lease expired went back to the queue, and
    -- another attempt records it; this outcome is not written, nor the slot passed on.
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
        -- The slot is let go (the worker is stopping). An admission that saw every
        -- slot busy published nothing, and holds this lock from that count to its
        -- commit: under the lock, either it saw this slot free, or its task is
        -- visible here and the caller publishes a message for the oldest one.
        PERFORM scheduler_lock_slots();
        SELECT t.uuid INTO wake_uuid FROM scheduler_task t
            WHERE t.status = 'queued'
            ORDER BY t.created_at
            LIMIT 1;
        RETURN;
    END IF;

    -- The hand-over: the number of processing tasks does not change, so no lock.
    v_uuid := scheduler_take_queued(NULL);
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
END
$fn$;
"""

DROP = """
DROP FUNCTION IF EXISTS scheduler_finish(
    uuid, integer, text, text, bytea, text, boolean, text, text, double precision,
    integer
);
DROP FUNCTION IF EXISTS scheduler_claim(
    uuid, integer, text, text, double precision, integer
);
DROP FUNCTION IF EXISTS scheduler_start_task(
    uuid, text, text, double precision, integer
);
DROP FUNCTION IF EXISTS scheduler_take_queued(uuid);
"""


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0004_admission_function")]
    operations = [migrations.RunPython(create_functions, drop_functions)]
