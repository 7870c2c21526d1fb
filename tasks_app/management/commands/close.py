"""``manage.py close [--wait SECONDS]``: refuse new requests, and optionally wait for
the accepted ones to finish. Exit 1 when they have not within ``--wait``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...scheduler import get_scheduler
from ..arguments import seconds
from .status import format_state


class Command(BaseCommand):
    help = (
        "Close the scheduler: every replica refuses new requests, and what was "
        "accepted still runs. With --wait, wait for it to finish."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--wait",
            type=seconds,
            metavar="SECONDS",
            help="wait up to this long until nothing is queued or processing; "
            "exit 1 if something still is",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wait: float | None = options["wait"]
        scheduler = get_scheduler()
        state = scheduler.close()
        if wait is not None and not scheduler.wait_drained(wait):
            state = scheduler.state()
            raise CommandError(
                f"not drained after {wait:g} s: {state.queued} queued, "
                f"{state.processing} processing",
                returncode=1,
            )
        if wait is not None:
            state = scheduler.state()
        self.stdout.write(format_state(state))
