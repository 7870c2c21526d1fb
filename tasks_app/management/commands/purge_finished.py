"""``manage.py purge_finished [--days N]``: the retention pass, run by hand.

Deletes tasks finished more than N days ago (default SCHEDULER_RETENTION_DAYS) and
Celery's result rows of the same age, in the batches the workers use every 10 minutes.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...config import scheduler_config
from ...retention import purge


class Command(BaseCommand):
    help = (
        "Delete finished tasks (done or error) and Celery results older than --days "
        "(default: SCHEDULER_RETENTION_DAYS)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            metavar="N",
            help="delete what finished more than N days ago (at least 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days: int | None = options["days"]
        if days is None:
            days = scheduler_config().retention_days
            if days == 0:
                raise CommandError(
                    "SCHEDULER_RETENTION_DAYS is 0 (keep everything): pass --days N "
                    "to purge anyway",
                    returncode=2,
                )
        if days < 1:
            raise CommandError("--days must be at least 1", returncode=2)
        purged = purge(days)
        self.stdout.write(
            f"deleted {purged.tasks} tasks and {purged.celery_results} Celery results "
            f"finished before {purged.cutoff.isoformat()}"
        )
