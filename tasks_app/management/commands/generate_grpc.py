"""``manage.py generate_grpc``: the same as ``python -m tasks_app.grpc_api.generate``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks_app.grpc_api import generate


class Command(BaseCommand):
    help = (
        "Write the scheduler.v1 .proto, its field-number lock and the Python modules "
        "from the Scheduler's public methods (--check: only report stale files)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true")
        parser.add_argument("--scheduler", default="tasks_app.scheduler:Scheduler")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = ["--scheduler", options["scheduler"]]
        if options["check"]:
            argv.append("--check")
        status = generate.main(argv)
        if status:
            raise CommandError(f"{generate.COMMAND} exited with status {status}")
