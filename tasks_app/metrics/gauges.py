"""Gauges of the whole cluster, read from the database when Prometheus scrapes.

The database holds the truth for every replica at once, so these need no multiprocess
bookkeeping and every web pod reports the same values: the autoscaler takes their
maximum. Three queries, each on an index over the unfinished statuses only: the queue
and the processing tasks, never the finished ones, whose table only grows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import dashboard
from ..interfaces import TaskStatus
from ..scheduler import get_scheduler

log = logging.getLogger(__name__)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class DatabaseGauges(Collector):
    """Queue depth, slots and the closed flag, as the database has them now."""

    def collect(self) -> Iterator[Metric]:
        scheduler = get_scheduler()
        try:
            state = scheduler.state()
            oldest = dashboard.oldest_queued_at(scheduler.storage.using)
        except DatabaseError as exc:
            # The counters are still worth serving; the gauges say the database is out.
            log.warning(
                "metrics: the database did not answer (%s); serving counters only",
                exc,
                extra={"event": "metrics_database_down"},
            )
            yield _gauge(
                "scheduler_database_up", "Whether the database answered the scrape.", 0
            )
            return

        yield _gauge(
            "scheduler_database_up", "Whether the database answered the scrape.", 1
        )
        by_status = GaugeMetricFamily(
            "scheduler_tasks",
            "Unfinished tasks by status (finished ones: scheduler_tasks_finished_total).",
            labels=["status"],
        )
        by_status.add_metric([TaskStatus.QUEUED.value], state.queued)
        by_status.add_metric([TaskStatus.PROCESSING.value], state.processing)
        yield by_status
        yield _gauge(
            "scheduler_tasks_queued",
            "Tasks waiting for a slot, cluster-wide: the worker autoscaler's metric.",
            state.queued,
        )
        yield _gauge(
            "scheduler_slots_in_use",
            "Slots in use: tasks processing, cluster-wide.",
            state.processing,
        )
        yield _gauge(
            "scheduler_slots",
            "The cap on concurrent processor calls (SCHEDULER_NUM_WORKERS).",
            state.num_workers,
        )
        yield _gauge(
            "scheduler_queue_size",
            "The most tasks that may be queued (SCHEDULER_QUEUE_SIZE).",
            state.queue_size,
        )
        yield _gauge(
            "scheduler_closed",
            "1 while the scheduler refuses new requests (on this replica), else 0.",
            1 if state.closed else 0,
        )
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        yield _gauge(
            "scheduler_oldest_queued_age_seconds",
            "How long the task waiting longest has been queued; 0 with none queued.",
            max(age, 0.0),
        )
