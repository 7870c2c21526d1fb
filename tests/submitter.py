"""Submit requests from a process of its own, as another replica or client would.

    python -m tests.submitter --threads 10 --start-at EPOCH REQUEST_HEX [REQUEST_HEX...]

Each thread submits every request once, all threads released together at ``--start-at``;
one JSON line per answer: {"uuid", "created", "status"} or {"error": code}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("requests", nargs="+", help="hex of each request")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    django.setup()
    from django.db import connection

    from tasks_app.errors import SchedulerError
    from tasks_app.scheduler import get_scheduler

    scheduler = get_scheduler()
    scheduler.state()  # connect before the start signal
    lock = threading.Lock()
    barrier = threading.Barrier(args.threads)

    def submit_all() -> None:
        barrier.wait()
        delay = args.start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        for request_hex in args.requests:
            try:
                admission = scheduler.add_task(bytes.fromhex(request_hex))
                line = {
                    "uuid": str(admission),
                    "created": admission.created,
                    "status": str(admission.status),
                }
            except SchedulerError as exc:
                line = {"error": exc.code}
            except Exception as exc:
                line = {
                    "error": "unexpected",
                    "message": f"{type(exc).__name__}: {exc}",
                }
            with lock:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
        connection.close()

    threads = [threading.Thread(target=submit_all) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
