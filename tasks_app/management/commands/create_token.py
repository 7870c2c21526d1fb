"""``manage.py create_token --scopes submit,read``: a new API token, printed once."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ...errors import BadRequest
from ...tokens import Scope, create_token, format_scopes, parse_scopes


class Command(BaseCommand):
    help = (
        "Create an API token with the given scopes and print it. Only its SHA-256 is "
        "stored: copy it now, it cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        known = ", ".join(scope.value for scope in Scope)
        parser.add_argument(
            "--scopes",
            required=True,
            help=f"comma-separated, from: {known}",
        )
        parser.add_argument(
            "--name", default="", help="who or what the token is for, for the admin"
        )
        parser.add_argument(
            "--expires-in-days",
            type=float,
            default=None,
            metavar="DAYS",
            help="calls with the token answer 401 after this many days (default: it "
            "never expires; revoke it in the admin)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            scopes = parse_scopes(options["scopes"])
        except BadRequest as exc:
            raise CommandError(str(exc)) from None
        days = options["expires_in_days"]
        if days is not None and not 0 < days <= 36_500:
            raise CommandError(
                f"--expires-in-days {days:g}: give a number of days above 0, at most "
                "36500"
            )
        expires_at = None if days is None else timezone.now() + dt.timedelta(days=days)
        row, token = create_token(scopes, name=options["name"], expires_at=expires_at)
        # The token alone on stdout, so that TOKEN=$(manage.py create_token ...) works;
        # what it is goes to stderr.
        self.stdout.write(token)
        until = (
            "it never expires"
            if expires_at is None
            else f"it expires at {expires_at.isoformat(timespec='seconds')}"
        )
        self.stderr.write(
            f"created token {row} with scopes {format_scopes(scopes)}; {until}; "
            "it is shown only this once"
        )
