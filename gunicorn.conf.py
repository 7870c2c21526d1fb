"""gunicorn's configuration for the web process (HTTP API, admin, health, metrics).

gunicorn reads this file from the working directory by itself, so the container and
``make run`` both start the web process as ``gunicorn scheduler_project.wsgi``.
Overrides: PORT (the port, on every interface), WEB_CONCURRENCY (worker processes),
GUNICORN_THREADS (threads per worker), PROMETHEUS_MULTIPROC_DIR (where the workers keep
their metrics; a folder of their own under the temporary directory by default), and
GUNICORN_CMD_ARGS for anything else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from gunicorn import util

from tasks_app.errors import CODE_BY_HTTP_STATUS

# The longest `GET /api/tasks/{uuid}?wait=N` the API allows, in seconds.
LONGEST_WAIT_SECONDS = 60

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Threads, not only processes: a `?wait` request holds its thread for up to a minute,
# and a sync worker would hold a whole process. Several processes still spread the
# CPU work (hashing, JSON) over the cores. A quarter of each worker's threads (at
# least one) never holds a wait, so that probes and short requests find one free
# (tasks_app/api/wait_bound.py).
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * (os.cpu_count() or 1) + 1, 8)))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))

# A worker that stops answering its arbiter for this long is killed and replaced. It
# must stay above the longest `?wait`, or a long poll could take its worker down.
timeout = LONGEST_WAIT_SECONDS + 30
# The longest request line gunicorn takes (its default is 4094): a Find of 200 UUIDs in
# an `in` (find.MAX_IN_VALUES) must reach Django, which answers it in JSON.
limit_request_line = 8190
# After SIGTERM a worker stops accepting and finishes what it has, a full `?wait`
# included; Kubernetes' terminationGracePeriodSeconds for web covers this plus preStop.
graceful_timeout = LONGEST_WAIT_SECONDS + 5
keepalive = 5

# gunicorn 25.1 and later open a control socket at one fixed path per user: two web
# processes on one machine (a test beside `make run`) would fight over it, and a
# read-only container cannot create it. Nothing here uses `gunicornc`.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
# The heartbeat file of each worker: memory, not an overlay filesystem that can stall.
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"


# What gunicorn refuses before Django sees the request (a request line over the limit,
# a malformed header) gets the API's JSON error body instead of gunicorn's HTML page;
# the status stays gunicorn's.
_MAX_ECHO_CHARS = 200


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, answering ``{"error", "message"}`` as the API does."""
    fallback = "bad_request" if status_int < 500 else "internal"
    code = CODE_BY_HTTP_STATUS.get(status_int, fallback)
    detail = mesg if len(mesg) <= _MAX_ECHO_CHARS else mesg[:_MAX_ECHO_CHARS] + "..."
    message = f"{reason}: {detail}" if detail else reason
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# Workers call it as util.write_error; patched in the arbiter, before they fork.
util.write_error = write_json_error


def on_starting(server: Any) -> None:
    """Give the workers an empty folder for their metrics, before the first one forks.

    prometheus-client's multiprocess mode reads PROMETHEUS_MULTIPROC_DIR when a worker
    first imports it, so the variable is set here, in the arbiter, whose environment
    every worker inherits. The default folder is named after the bind address, so that
    two web servers on one machine never add up each other's counts. Files of a
    previous run are deleted: this run's counters start from zero.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        address = re.sub(r"[^0-9A-Za-z.]+", "_", "-".join(server.cfg.bind))
        folder = Path(tempfile.gettempdir()) / f"scheduler-metrics-web-{address}"
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its counters stay in the sum, its live gauges go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _mark_shutting_down() -> None:
    """Make this process's /readyz fail, so traffic moves away while requests finish."""
    from tasks_app import health

    health.begin_shutdown()


def post_worker_init(worker: Any) -> None:
    """Wrap the worker's SIGTERM handler (first fail readiness, then stop gracefully),
    bound the worker's `?wait` long polls, and warm the broker client.

    gunicorn has no hook for a worker's SIGTERM (``worker_int`` is SIGINT and SIGQUIT),
    and the arbiter passes SIGTERM on to every worker, so the wrap goes here, after
    gunicorn has installed its own handler.
    """
    graceful_exit = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _mark_shutting_down()
        if callable(graceful_exit):
            graceful_exit(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # As gunicorn does: SIGTERM must not interrupt the system calls of a request.
    signal.siginterrupt(signal.SIGTERM, False)

    # From the threads this worker really has: a --threads or GUNICORN_CMD_ARGS
    # overrides the environment variable that the settings could have read.
    from tasks_app.api import wait_bound

    wait_bound.set_bound(wait_bound.max_waits_for_threads(worker.cfg.threads))

    # The application is loaded by now: warm the broker client, so that this worker's
    # first admission does not pay Celery's first-publish setup.
    from tasks_app.dispatch import prepare

    prepare()


def worker_int(worker: Any) -> None:
    _mark_shutting_down()
