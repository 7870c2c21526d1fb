"""Claim, hold and finish slots in a loop from a process of its own; print what it saw.

python -m tests.churner --start-at EPOCH --num-workers N --seconds S

From the moment given, until the queue is empty or the time is up: claim a slot, count
the processing tasks while holding it, hold it a few milliseconds, and finish the task,
taking the next one or letting the slot go, at random. Prints one JSON line: how many
tasks it ran and the most processing tasks it counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--num-workers", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    django.setup()
    from django.db import connection

    from tasks_app import leases
    from tasks_app.models import Status, TaskRecord

    connection.ensure_connection()
    time.sleep(max(0.0, args.start_at - time.time()))
    deadline = time.monotonic() + args.seconds
    worker = f"churner {os.getpid()}"
    ran = most_seen = 0
    while time.monotonic() < deadline:
        claim = leases.claim(
            None, worker=worker, num_workers=args.num_workers, lease_seconds=60
        )
        if claim is None:
            if not TaskRecord.objects.filter(status=Status.QUEUED).exists():
                break
            time.sleep(0.001)
            continue
        while claim is not None:
            most_seen = max(most_seen, leases.slots_in_use())
            time.sleep(random.uniform(0, 0.01))
            ran += 1
            claim = leases.finish(
                claim,
                leases.Outcome(Status.DONE, result=claim.request),
                take_next=random.random() < 0.5,
                worker=worker,
                lease_seconds=60,
            )
    print(json.dumps({"ran": ran, "most_seen": most_seen}))


if __name__ == "__main__":
    main()
