"""``manage.py status [--json]``: the scheduler's state, as ``GET /api/scheduler``."""

from __future__ import annotations

import dataclasses
import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from ...interfaces import State
from ...scheduler import get_scheduler


def state_fields(state: State) -> dict[str, Any]:
    fields = dataclasses.asdict(state)
    fields["state"] = state.state.value
    return fields


def format_state(state: State) -> str:
    return "\n".join(f"{name}: {value}" for name, value in state_fields(state).items())


class Command(BaseCommand):
    help = "Show whether the scheduler accepts requests, and how many tasks it holds."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="one JSON object, for scripts"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        state = get_scheduler().state()
        if options["json"]:
            self.stdout.write(json.dumps(state_fields(state)))
        else:
            self.stdout.write(format_state(state))
