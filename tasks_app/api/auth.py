"""Who may call what: each route declares a scope, and ``authorize`` alone decides.

Scopes are ``submit`` (add tasks), ``read`` (tasks and the scheduler's state) and
``operate`` (close, open, retry). With ``SCHEDULER_AUTH_REQUIRED`` off, as in the
development settings, every caller holds every scope. The gRPC interceptor asks the
same ``authorize``, so a token means the same over both, and shares one request rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer

from .. import ratelimit, tokens
from ..errors import SchedulerError
from ..tokens import Scope

__all__ = ["Forbidden", "Principal", "Scope", "Unauthenticated", "authorize"]


class Unauthenticated(SchedulerError):
    """No valid credentials came with the request: send ``Authorization: Bearer TOKEN``."""

    code = "unauthenticated"


class Forbidden(SchedulerError):
    """The token is valid but lacks the scope this call needs; ask for a token with it."""

    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a request was authorized as, and the scopes it holds.

    ``rate_key`` names whose request rate a call counts against: ``None`` for nobody.
    """

    name: str
    scopes: frozenset[Scope]
    rate_key: str | None = None


OPEN_ACCESS = Principal("anyone (SCHEDULER_AUTH_REQUIRED is off)", frozenset(Scope))


def auth_required() -> bool:
    # Missing means required: a settings module that forgets it must not open the API.
    return bool(getattr(settings, "SCHEDULER_AUTH_REQUIRED", True))


def principal_for_token(token: str) -> Principal | None:
    """The principal a bearer token stands for, or ``None`` for an unknown or revoked one.

    An expired token is refused here, with its expiry: its holder has the secret, so
    saying when it expired tells nothing to anyone else.
    """
    row = tokens.find_token(token)
    if row is None:
        return None
    if tokens.has_expired(row):
        assert row.expires_at is not None
        raise Unauthenticated(
            f"the bearer token {row.prefix}... expired at "
            f"{row.expires_at.isoformat(timespec='seconds')}; ask for a new one"
        )
    return Principal(str(row), tokens.scopes_of(row), rate_key=f"token:{row.pk}")


def authorize(token: str | None, scope: Scope) -> Principal:
    """The one decision: may the holder of ``token`` act within ``scope``?"""
    if not auth_required():
        return OPEN_ACCESS
    if not token:
        raise Unauthenticated(
            "this call needs a token: send Authorization: Bearer TOKEN"
        )
    principal = principal_for_token(token)
    if principal is None:
        raise Unauthenticated("the bearer token is unknown or revoked")
    # Every call of a known token counts, refused ones too: a token's rate is what
    # it sends, and a flood of forbidden calls costs the service as much as any other.
    if principal.rate_key is not None:
        ratelimit.hit(principal.rate_key)
    if scope not in principal.scopes:
        raise Forbidden(f"this call needs a token with the {scope.value!r} scope")
    return principal


class ScopedBearer(HttpBearer):
    """The ninja auth of one route: a bearer token that must hold ``scope``."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        super().__init__()

    def __call__(self, request: HttpRequest) -> Principal:
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        return authorize(
            token.strip() if scheme.lower() == "bearer" else None, self.scope
        )

    def authenticate(self, request: HttpRequest, token: str) -> Principal:
        return authorize(token, self.scope)


def requires(scope: Scope) -> ScopedBearer:
    return ScopedBearer(scope)
