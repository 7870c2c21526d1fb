"""A Celery worker's metrics: its main process serves what its pool processes count.

Pool processes have no HTTP server. They write their counters to the multiprocess
folder, and the main process serves the folder's sum on SCHEDULER_METRICS_PORT (0, the
default, serves nothing), beside the lease keeper's own counts. Cluster-wide gauges are
web's (``/metrics``), so a worker's port has none and two replicas never report them
twice.
"""

from __future__ import annotations

import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import signals
from django.conf import settings

from . import files, port

log = logging.getLogger(__name__)

_server: WSGIServer | None = None


@signals.worker_init.connect
def clean_folder(**_: Any) -> None:
    # Before the pool forks: the files of a previous boot's processes would otherwise
    # add their counts to this one's, and the folder would grow with every restart.
    folder = files.directory()
    if folder is not None:
        files.remove_files_of_dead_processes(folder)


@signals.worker_ready.connect
def serve_port(sender: Any = None, **_: Any) -> None:
    """Serve ``/metrics`` on SCHEDULER_METRICS_PORT from this, the main, process.

    Started once the pool runs, so the first pool processes do not inherit the socket;
    a pool process forked later to replace one does, harmlessly: it never accepts.
    """
    global _server
    if not settings.SCHEDULER_METRICS_PORT:
        return
    if files.directory() is None:
        log.warning(
            "SCHEDULER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: the port "
            "serves this main process's counters only, not its pool processes'",
            extra={"event": "metrics_in_process"},
        )
    _server = port.serve(settings.SCHEDULER_METRICS_PORT, "worker")


@signals.worker_shutdown.connect
def stop_port(**_: Any) -> None:
    global _server
    port.stop(_server)
    _server = None
