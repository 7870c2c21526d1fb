"""API tokens: made once, kept only as the SHA-256 of the secret, found by that digest.

A token is ``sch_`` and 43 URL-safe characters (256 random bits), so a digest without a
salt is enough: nobody can guess one to look up. ``api.auth`` decides with what is
found here; ``manage.py create_token`` and the admin create tokens.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
from collections.abc import Iterable

from django.db.models import QuerySet
from django.utils import timezone

from .errors import BadRequest
from .models import ApiToken

TOKEN_PREFIX = "sch_"
TOKEN_RANDOM_BYTES = 32
# What the admin shows to tell tokens apart: the fixed prefix and 8 random characters.
SHOWN_PREFIX_CHARS = len(TOKEN_PREFIX) + 8
# Longer than any token we issue: not worth hashing.
MAX_TOKEN_CHARS = 200


class Scope(enum.StrEnum):
    """What a token may do: ``submit`` tasks, ``read`` them, ``operate`` the scheduler."""

    SUBMIT = "submit"
    READ = "read"
    OPERATE = "operate"


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    """``"submit,read"`` (or a list of names) as scopes; an unknown name is a BadRequest."""
    names = text.split(",") if isinstance(text, str) else list(text)
    scopes = set()
    for name in (name.strip().lower() for name in names):
        if not name:
            continue
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise BadRequest(f"unknown scope {name!r}; known: {known}") from None
    if not scopes:
        raise BadRequest("a token needs at least one scope: submit, read or operate")
    return frozenset(scopes)


def format_scopes(scopes: Iterable[Scope]) -> str:
    """In the order of ``Scope``, comma-separated, as the table keeps them."""
    chosen = set(scopes)
    return ",".join(scope.value for scope in Scope if scope in chosen)


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_secret(row: ApiToken) -> str:
    """Give an unsaved ``row`` a fresh token; return the token, which is never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    row.prefix = token[:SHOWN_PREFIX_CHARS]
    row.digest = digest_of(token)
    return token


def create_token(
    scopes: Iterable[Scope], name: str = "", expires_at: dt.datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token row and the token itself, to be shown once and never again."""
    row = ApiToken(name=name, scopes=format_scopes(scopes), expires_at=expires_at)
    token = issue_secret(row)
    row.save(force_insert=True)
    return row, token


def find_token(token: str) -> ApiToken | None:
    """The row of ``token`` unless it was revoked, expired or not, or ``None``."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return (
        ApiToken.objects.filter(digest=digest_of(token), revoked_at__isnull=True)
        .only("id", "name", "prefix", "scopes", "expires_at")
        .first()
    )


def has_expired(row: ApiToken, now: dt.datetime | None = None) -> bool:
    return row.expires_at is not None and row.expires_at <= (now or timezone.now())


def scopes_of(row: ApiToken) -> frozenset[Scope]:
    # Names the code no longer knows grant nothing, rather than failing every call.
    known = {scope.value for scope in Scope}
    return frozenset(Scope(name) for name in row.scopes.split(",") if name in known)


def revoke(tokens: QuerySet[ApiToken]) -> int:
    """Revoke every live token of ``tokens``; the next call with one is 401."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
