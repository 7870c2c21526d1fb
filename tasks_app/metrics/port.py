"""A metrics port for processes that have no web server of their own.

A worker's main process and the gRPC server serve, on SCHEDULER_METRICS_PORT, the sum
of their processes' counters (the multiprocess folder's, or this process's alone).
Cluster-wide gauges are web's (``/metrics``), so these ports have none and two replicas
never report them twice.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from . import files

log = logging.getLogger(__name__)


def serve(port: int, what: str) -> WSGIServer | None:
    """Serve ``/metrics`` on ``port`` from a thread; ``None`` when 0 or unavailable."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, registry=files.process_registry())
    except OSError as exc:
        log.error(
            "metrics: cannot serve port %d (%s); the %s runs without it",
            port,
            exc,
            what,
            extra={"event": "metrics_port_failed"},
        )
        return None
    log.info(
        "metrics: serving the %s's counters on port %d",
        what,
        port,
        extra={"event": "metrics_serving"},
    )
    return server


def stop(server: WSGIServer | None) -> None:
    if server is not None:
        server.shutdown()  # the serving thread is another: this returns
        server.server_close()
