"""Admission as one PL/pgSQL call on PostgreSQL (see ``tasks_app.admission``), and the
slot lock it shares with the claim and the hand-over of 0005.

The function is VOLATILE on purpose: in READ COMMITTED each statement in it takes a
fresh snapshot, so what it reads after waiting for a lock includes every admission that
committed while it waited. Other databases keep the ORM path and get nothing here.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION scheduler_lock_slots() RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM 1 FROM scheduler_slot_lock l WHERE l.id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        -- A migration makes the row; if it was deleted, make it again, then lock it:
        -- the insert that loses a race returns without the lock.
        INSERT INTO scheduler_slot_lock (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
        PERFORM 1 FROM scheduler_slot_lock l WHERE l.id = 1 FOR UPDATE;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION scheduler_admit(
    p_uuid uuid,
    p_hash text,
    p_request bytea,
    p_queue_size integer,
    p_num_workers integer
) RETURNS TABLE (outcome text, task_uuid uuid, task_status text, wake boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_closed boolean;
    v_uuid uuid;
    v_status text;
    v_queued bigint;
    v_processing bigint;
BEGIN
    -- Without any lock first: a closed scheduler or a duplicate needs nothing more.
    SELECT s.closed INTO v_closed FROM scheduler_switch s WHERE s.id = 1;
    IF v_closed THEN
        RETURN QUERY SELECT 'closed'::text, NULL::uuid, NULL::text, false;
        RETURN;
    END IF;
    SELECT t.uuid, t.status INTO v_uuid, v_status
        FROM scheduler_task t WHERE t.hash = p_hash;
    IF FOUND THEN
        RETURN QUERY SELECT 'existing'::text, v_uuid, v_status, false;
        RETURN;
    END IF;

    -- The admission lock, held to the commit: across every replica, the closed check,
    -- the duplicate check and the queue bound below are one serial decision.
    SELECT s.closed INTO v_closed FROM scheduler_switch s WHERE s.id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        -- A migration makes the row; if it was deleted, make it again, then lock it.
        INSERT INTO scheduler_switch (id, closed) VALUES (1, false)
            ON CONFLICT (id) DO NOTHING;
        SELECT s.closed INTO v_closed FROM scheduler_switch s WHERE s.id = 1 FOR UPDATE;
    END IF;
    IF v_closed THEN
        RETURN QUERY SELECT 'closed'::text, NULL::uuid, NULL::text, false;
        RETURN;
    END IF;
    SELECT t.uuid, t.status INTO v_uuid, v_status
        FROM scheduler_task t WHERE t.hash = p_hash;
    IF FOUND THEN
        RETURN QUERY SELECT 'existing'::text, v_uuid, v_status, false;
        RETURN;
    END IF;
    SELECT count(*) INTO v_queued FROM scheduler_task t WHERE t.status = 'queued';
    IF v_queued >= p_queue_size THEN
        RETURN QUERY SELECT 'full'::text, NULL::uuid, NULL::text, false;
        RETURN;
    END IF;

    -- Whether to wake a worker. With a slot free, yes. With every slot busy, a worker
    -- finishing its task will hand its slot to this one, so a message would only cost
    -- a wasted claim; but that is only sure under the slot lock, which every move that
    -- frees a slot without handing it over holds while it looks at the queue. Held
    -- from this count to the commit, either the count sees the freed slot, or the
    -- move that frees it sees this task.
    SELECT count(*) INTO v_processing FROM scheduler_task t
        WHERE t.status = 'processing';
    IF v_processing >= p_num_workers THEN
        PERFORM scheduler_lock_slots();
        SELECT count(*) INTO v_processing FROM scheduler_task t
            WHERE t.status = 'processing';
    END IF;

    -- The database's clock, as for leases: replicas whose clocks drift apart must
    -- still agree on the order of tasks and on how long one has waited.
    INSERT INTO scheduler_task (
        uuid, hash, status, request, request_size, result, result_size, error,
        attempts, created_at, started_at, finished_at, worker, lease_owner,
        lease_expires_at, dispatched_at
    ) VALUES (
        p_uuid, p_hash, 'queued', p_request, octet_length(p_request), NULL, NULL, '',
        0, statement_timestamp(), NULL, NULL, '', '',
        NULL, statement_timestamp()
    );
    RETURN QUERY SELECT 'created'::text, p_uuid, 'queued'::text,
        v_processing < p_num_workers;
END
$fn$;
"""

DROP = """
DROP FUNCTION IF EXISTS scheduler_admit(uuid, text, bytea, integer, integer);
DROP FUNCTION IF EXISTS scheduler_lock_slots();
"""


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0003_api_tokens")]
    operations = [migrations.RunPython(create_function, drop_function)]
