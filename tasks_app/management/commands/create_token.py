"""``manage.py create_token --scopes submit,read``: a new API token, printed once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

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

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            scopes = parse_scopes(options["scopes"])
        except BadRequest as exc:
            raise CommandError(str(exc)) from None
        row, token = create_token(scopes, name=options["name"])
        # The token alone on stdout, so that TOKEN=$(manage.py create_token ...) works;
        # what it is goes to stderr.
        self.stdout.write(token)
        self.stderr.write(
            f"created token {row} with scopes {format_scopes(scopes)}; "
            "it is shown only this once"
        )
