"""A lease runs from the moment its task starts, not from when its statement began.

``scheduler_start_task`` set ``lease_expires_at`` from ``statement_timestamp()``: a claim
or hand-over that waited on the slot lock (another claim, a burst of admissions) spent
that wait out of its own lease, and one that waited nearly a lease committed a lease
about to lapse, which no keeper could renew in time. ``clock_timestamp()`` is read when
the update runs, after every lock the statement waited for. ``started_at`` keeps the
statement's time, as Django's ``Now()`` gives on the ORM path.
"""

from django.db import migrations

START_TASK = r"""
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
    UPDATE scheduler_task t SET
        status = 'processing',
        attempts = t.attempts + 1,
        started_at = statement_timestamp(),
        finished_at = NULL,
        worker = p_worker,
        lease_owner = p_owner,
        lease_expires_at = {now} + make_interval(secs => p_lease_seconds)
    WHERE t.uuid = p_uuid
    RETURNING t.uuid, t.hash, t.attempts,
        -- The length of a stored value is known without reading it.
        CASE WHEN octet_length(t.request) <= p_inline_bytes THEN t.request END
    INTO task_uuid, task_hash, task_attempts, task_request;
END
$fn$;
"""


def lease_from_the_start(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(START_TASK.replace("{now}", "clock_timestamp()"))


def lease_from_the_statement(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(START_TASK.replace("{now}", "statement_timestamp()"))


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0007_api_token_expiry")]
    operations = [migrations.RunPython(lease_from_the_start, lease_from_the_statement)]
