"""Claim one slot from a process of its own, at a given moment; print what it got.

python -m tests.claimer --start-at EPOCH --num-workers N
"""

from __future__ import annotations

import argparse
import os
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--num-workers", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    django.setup()
    from django.db import connection

    from tasks_app import leases

    connection.ensure_connection()
    time.sleep(max(0.0, args.start_at - time.time()))
    claim = leases.claim(
        None,
        worker=f"claimer {os.getpid()}",
        num_workers=args.num_workers,
        lease_seconds=60,
    )
    print(claim.uuid if claim else "none")


if __name__ == "__main__":
    main()
