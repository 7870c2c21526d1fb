"""``manage.py open``: accept requests again, on every replica."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ...scheduler import get_scheduler
from .status import format_state


class Command(BaseCommand):
    help = "Reopen the scheduler: every replica accepts requests again."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(format_state(get_scheduler().open()))
