"""Prometheus metrics: what each process counts, and where Prometheus reads it.

Counters and the histogram (``counters``) live in the process that counts: a gunicorn
worker, a Celery pool process, a worker's lease keeper. With PROMETHEUS_MULTIPROC_DIR
set, each process writes its values to files of its own in that folder (``files``), and
whoever serves them sums the files, those of exited processes included. Gauges about
the whole cluster (queue depth, slots) are read from the database at scrape time
instead (``gauges``): exact, and the same on every replica.

Web serves ``GET /metrics`` (``views``); a worker's main process serves its pool's
counters on SCHEDULER_METRICS_PORT (``worker``). Counting costs a lock and a write to a
memory-mapped file: no database, no network.
"""

from __future__ import annotations

# Connects the worker's start-up handlers: the folder clean-up and the metrics port.
from . import worker as _worker  # noqa: F401
