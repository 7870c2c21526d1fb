"""The counters and the histogram, and the one-line calls the hot paths make.

Each label value is created up front: a series that exists at 0 lets ``rate()`` and
"before and after" comparisons see its first increment.
The label values are the only vocabulary: call sites pass a status or a reason, never a
metric name.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ..interfaces import TaskStatus
from . import files

# In multiprocess mode the metrics below open their files as they are created: a folder
# that does not exist yet would make this import fail in every process.
files.ensure_directory()

# An expensive processor: from a tenth of a second to the default time limit of an hour.
PROCESSING_BUCKETS_SECONDS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

REFUSAL_REASONS = ("closed", "queue_full", "too_large")
ADMISSION_KINDS = ("new", "retry")
FINISHED_STATUSES = (TaskStatus.DONE.value, TaskStatus.ERROR.value)
LEASE_OUTCOMES = (TaskStatus.QUEUED.value, TaskStatus.ERROR.value)
RECOVERY_ACTIONS = ("requeued", "redispatched", "released")

admitted = Counter(
    "scheduler_admissions_total",
    "Requests admitted: new tasks queued, and tasks in error queued again.",
    ["kind"],
)
dedup_hits = Counter(
    "scheduler_dedup_hits_total",
    "Requests answered with the existing task of the same hash.",
)
refused = Counter(
    "scheduler_refusals_total",
    "Submissions and retries that the scheduler refused, by reason.",
    ["reason"],
)
finished = Counter(
    "scheduler_tasks_finished_total",
    "Tasks that reached done or error, counted by the process that recorded it.",
    ["status"],
)
processing_seconds = Histogram(
    "scheduler_processing_seconds",
    "How long one processor call took, by the outcome it recorded.",
    ["status"],
    buckets=PROCESSING_BUCKETS_SECONDS,
)
lease_expiries = Counter(
    "scheduler_lease_expiries_total",
    "Leases found expired (their worker stopped renewing), by what became of the task.",
    ["outcome"],
)
recoveries = Counter(
    "scheduler_recoveries_total",
    "Repairs by the lease keepers: expired tasks queued again, lost messages published "
    "again, leases of dead pool processes released at once.",
    ["action"],
)
waits_cut_short = Counter(
    "scheduler_http_waits_cut_short_total",
    "GET /api/tasks/{uuid}?wait=N answered at once, unfinished, because the web "
    "process already held as many waits as it allows.",
)

for _kind in ADMISSION_KINDS:
    admitted.labels(_kind)
for _reason in REFUSAL_REASONS:
    refused.labels(_reason)
for _status in FINISHED_STATUSES:
    finished.labels(_status)
    processing_seconds.labels(_status)
for _outcome in LEASE_OUTCOMES:
    lease_expiries.labels(_outcome)
for _action in RECOVERY_ACTIONS:
    recoveries.labels(_action)


def count_admission(kind: str) -> None:
    admitted.labels(kind).inc()


def count_dedup_hit() -> None:
    dedup_hits.inc()


def count_refusal(reason: str) -> None:
    if reason in REFUSAL_REASONS:
        refused.labels(reason).inc()


def count_finished(status: str, processing_seconds_taken: float | None = None) -> None:
    """A task reached ``status``; with the processor's time when a call produced it."""
    finished.labels(status).inc()
    if processing_seconds_taken is not None:
        processing_seconds.labels(status).observe(processing_seconds_taken)


def count_wait_cut_short() -> None:
    waits_cut_short.inc()


def count_lease_expiry(outcome: str) -> None:
    lease_expiries.labels(outcome).inc()


def count_recovery(action: str, tasks: int = 1) -> None:
    if tasks:
        recoveries.labels(action).inc(tasks)
