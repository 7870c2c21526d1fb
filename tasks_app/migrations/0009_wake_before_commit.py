"""A worker woken before its task's admission has committed waits for that commit.

``tasks_app.admission`` publishes a new task's wake-up between the admission's statement
and its commit, so that the broker and the worker's way to the claim overlap the commit
(on PostgreSQL, its wait for the disk). A claim can then reach the database before the
row is visible. Here the admission takes an advisory lock on its task's UUID, held to
its commit, before it may take the slot lock; a claim whose preferred task does not
exist yet takes the same lock, shared, before the slot lock, and so waits for that
admission to commit or roll back. The next statement of the claim (a VOLATILE function:
a fresh snapshot) then sees the row, or sees that there is none.

Both functions are those of 0004 and 0006 with those lines added.
"""

import importlib

from django.db import migrations

_ADMISSION = importlib.import_module("tasks_app.migrations.0004_admission_function")
_RESERVATIONS = importlib.import_module("tasks_app.migrations.0006_reservations")

# pg_advisory_xact_lock's first key, for this project's locks; the second is the UUID's
# hash. Two UUIDs with one hash only make one of them wait for the other's commit.
LOCK_SPACE = 1_598_166_011  # no meaning; any other application's locks use their own

ADMIT_LOCKS_ITS_UUID = f"""
    -- Held to the commit: a worker woken before it waits here for the row.
    PERFORM pg_advisory_xact_lock({LOCK_SPACE}, hashtext(p_uuid::text));
"""
CLAIM_WAITS_FOR_THE_ADMISSION = f"""
    -- A wake-up can arrive before its admission commits: wait for that commit.
    IF p_preferred IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM scheduler_task t WHERE t.uuid = p_preferred
    ) THEN
        PERFORM pg_advisory_xact_lock_shared({LOCK_SPACE}, hashtext(p_preferred::text));
    END IF;
"""

# Where the lines go: before the admission counts the busy slots (it may take the slot
# lock there, which a waiting claim takes after this one), and first thing in a claim.
_ADMIT_ANCHOR = "\n    -- Whether to wake a worker."
_CLAIM_ANCHOR = "\n    -- Held to the commit: no other claim counts the slots"


def _function(source: str, name: str) -> str:
    """One ``CREATE OR REPLACE FUNCTION`` statement out of a migration's SQL."""
    start = source.index(f"CREATE OR REPLACE FUNCTION {name}(")
    end = source.index("$fn$;", start) + len("$fn$;")
    return source[start:end]


def _with(function: str, anchor: str, lines: str) -> str:
    if function.count(anchor) != 1:
        raise RuntimeError(f"0009: {anchor!r} is not once in the function it extends")
    return function.replace(anchor, "\n" + lines.strip("\n") + "\n" + anchor, 1)


ADMIT_BEFORE = _function(_ADMISSION.CREATE, "scheduler_admit")
CLAIM_BEFORE = _function(_RESERVATIONS.CREATE, "scheduler_claim")
ADMIT = _with(ADMIT_BEFORE, _ADMIT_ANCHOR, ADMIT_LOCKS_ITS_UUID)
CLAIM = _with(CLAIM_BEFORE, _CLAIM_ANCHOR, CLAIM_WAITS_FOR_THE_ADMISSION)


def wait_for_admissions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ADMIT)
        schema_editor.execute(CLAIM)


def do_not_wait(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ADMIT_BEFORE)
        schema_editor.execute(CLAIM_BEFORE)


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0008_lease_from_the_start")]
    operations = [migrations.RunPython(wait_for_admissions, do_not_wait)]
