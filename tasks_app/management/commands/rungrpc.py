"""``manage.py rungrpc``: serve the Scheduler over gRPC until SIGTERM."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks_app.grpc_api.server import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HEALTH_INTERVAL_SECONDS,
    DEFAULT_THREADS,
    serve,
)
from tasks_app.metrics import port as metrics_port


class Command(BaseCommand):
    help = (
        "Serve the Scheduler over gRPC (scheduler.v1.Scheduler, health, reflection) "
        "until SIGTERM or Ctrl-C, then let calls in flight finish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=settings.SCHEDULER_GRPC_PORT,
            help="the port (default: SCHEDULER_GRPC_PORT, 50051)",
        )
        parser.add_argument(
            "--host", default="0.0.0.0", help="the address to bind (default: 0.0.0.0)"
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=DEFAULT_THREADS,
            help="calls served at once, at least 2; each may hold a database "
            "connection, and WaitDrained calls may take at most half of them "
            f"(default: {DEFAULT_THREADS})",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=DEFAULT_GRACE_SECONDS,
            help="seconds calls in flight may take to finish after SIGTERM "
            f"(default: {DEFAULT_GRACE_SECONDS:g})",
        )

        parser.add_argument(
            "--health-interval",
            type=float,
            default=DEFAULT_HEALTH_INTERVAL_SECONDS,
            help="seconds between two checks of the database and broker behind the "
            f"health service (default: {DEFAULT_HEALTH_INTERVAL_SECONDS:g})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["threads"] < 2:
            raise CommandError("--threads must be at least 2", returncode=2)
        # Admissions, duplicates and refusals made over gRPC are counted here.
        metrics = metrics_port.serve(settings.SCHEDULER_METRICS_PORT, "gRPC server")
        try:
            serve(
                host=options["host"],
                port=options["port"],
                threads=options["threads"],
                grace_seconds=options["grace"],
                health_interval_seconds=options["health_interval"],
            )
        finally:
            metrics_port.stop(metrics)
