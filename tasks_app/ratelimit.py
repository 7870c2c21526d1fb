"""The per-token request rate (SCHEDULER_RATE_LIMIT), counted where every process sees it.

Counting uses the ``limits`` library's fixed windows. The counters live in the broker's
Redis when the broker is Redis, since the platform uses no Redis beyond the broker's
URL, and in the database (table ``scheduler_rate_counter``) otherwise: either way every
web, gRPC and worker process of a deployment shares them. A fixed window lets a token
send up to twice its limit across a window boundary; the limit is there against floods,
not for billing.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from limits import RateLimitItem
from limits.limits import GRANULARITIES
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .errors import Refused

log = logging.getLogger(__name__)

# A storage that does not answer within this is skipped rather than waited for.
REDIS_TIMEOUT_SECONDS = 0.5
# One warning per process and this interval while the counters cannot be reached.
STORAGE_WARNING_INTERVAL_SECONDS = 60.0

_UNITS = {
    "s": "second",
    "sec": "second",
    "second": "second",
    "m": "minute",
    "min": "minute",
    "minute": "minute",
    "h": "hour",
    "hour": "hour",
    "d": "day",
    "day": "day",
}
_RATE = re.compile(
    r"^\s*(?P<amount>\d+)\s*(?:/|per)\s*(?P<multiple>\d+)?\s*(?P<unit>[a-z]+?)s?\s*$",
    re.IGNORECASE,
)
_OFF = frozenset({"", "0", "off", "none"})


class RateLimited(Refused):
    """The token sent more requests than SCHEDULER_RATE_LIMIT allows; wait, then retry."""

    code = "rate_limited"

    def __init__(self, limit: RateLimitItem, retry_after_seconds: int) -> None:
        super().__init__(
            f"this token is over its request rate of {describe(limit)} "
            f"(SCHEDULER_RATE_LIMIT); try again in {retry_after_seconds} s"
        )
        self.retry_after_seconds = retry_after_seconds


def describe(limit: RateLimitItem) -> str:
    per = limit.GRANULARITY.name
    if limit.multiples != 1:
        per = f"{limit.multiples} {per}s"
    return f"{limit.amount} per {per}"


def parse_rates(text: str) -> list[RateLimitItem]:
    """``"100/s"``, ``"6000/m"``, ``"10 per 5 minutes"``, several joined by ``;``.

    Empty, ``0`` or ``off`` is no limit. Anything else that does not parse is an
    ``ImproperlyConfigured`` naming the part that is wrong.
    """
    if text.strip().lower() in _OFF:
        return []
    items = []
    for part in re.split(r"[;,]", text):
        match = _RATE.match(part)
        unit = _UNITS.get(match["unit"].lower()) if match else None
        if match is None or unit is None or int(match["amount"]) < 1:
            raise ImproperlyConfigured(
                f"SCHEDULER_RATE_LIMIT: {part.strip()!r} is not a rate such as "
                "'100/s', '6000/m' or '100/second'"
            )
        items.append(
            GRANULARITIES[unit](int(match["amount"]), int(match["multiple"] or 1))
        )
    return items


class DatabaseStorage(Storage):
    """``limits`` counters in the table ``scheduler_rate_counter``, for a broker not Redis.

    One upsert per hit: PostgreSQL and SQLite both take ``ON CONFLICT ... DO UPDATE``
    with ``RETURNING``, and the row lock it takes makes concurrent hits count exactly.
    """

    STORAGE_SCHEME = ["scheduler-database"]

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)

    @property
    def base_exceptions(self) -> type[Exception]:
        return DatabaseError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO scheduler_rate_counter (key, count, expires_at)"
                " VALUES (%s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET"
                " count = CASE WHEN scheduler_rate_counter.expires_at <= %s"
                " THEN excluded.count"
                " ELSE scheduler_rate_counter.count + excluded.count END,"
                " expires_at = CASE WHEN scheduler_rate_counter.expires_at <= %s"
                " THEN excluded.expires_at"
                " ELSE scheduler_rate_counter.expires_at END"
                " RETURNING count",
                [key, amount, now + expiry, now, now],
            )
            (count,) = cursor.fetchone()
        return int(count)

    def _live(self, key: str) -> tuple[int, float] | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count, expires_at FROM scheduler_rate_counter"
                " WHERE key = %s AND expires_at > %s",
                [key, time.time()],
            )
            row = cursor.fetchone()
        return (int(row[0]), float(row[1])) if row else None

    def get(self, key: str) -> int:
        live = self._live(key)
        return live[0] if live else 0

    def get_expiry(self, key: str) -> float:
        live = self._live(key)
        return live[1] if live else time.time()

    def check(self) -> bool:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return False
        return True

    def reset(self) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM scheduler_rate_counter")
            return int(cursor.rowcount)

    def clear(self, key: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM scheduler_rate_counter WHERE key = %s", [key])


def storage_for(broker_url: str) -> Storage:
    """The broker's Redis when it is one, else the database."""
    if broker_url.startswith(("redis://", "rediss://")):
        storage = storage_from_string(
            broker_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        assert isinstance(storage, Storage)  # the asyncio storages have other schemes
        return storage
    return DatabaseStorage()


@dataclass
class RateLimiter:
    """The rates of SCHEDULER_RATE_LIMIT, counted per token in ``storage``."""

    limits: list[RateLimitItem]
    storage: Storage

    def __post_init__(self) -> None:
        self.strategy = FixedWindowRateLimiter(self.storage)
        self._warned_at = -math.inf

    def hit(self, key: str) -> None:
        """Count one request of ``key``; ``RateLimited`` if any rate is exceeded.

        A storage that cannot be reached lets the request through, with a warning: the
        limit guards against floods, and an unreachable Redis must not also stop reads.
        """
        for limit in self.limits:
            try:
                allowed = self.strategy.hit(limit, key)
                if allowed:
                    continue
                reset_at = self.strategy.get_window_stats(limit, key).reset_time
            except Exception as exc:  # the storage's own errors: redis, the database
                self._warn_unreachable(exc)
                return
            retry_after = max(1, math.ceil(reset_at - time.time()))
            raise RateLimited(limit, retry_after)

    def _warn_unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at < STORAGE_WARNING_INTERVAL_SECONDS:
            return
        self._warned_at = now
        log.warning(
            "rate limit: its counters are out of reach (%s: %s); requests go through "
            "unlimited until they answer again",
            type(exc).__name__,
            exc,
            extra={"event": "rate_limit_unavailable"},
        )


_limiter: RateLimiter | None = None
_limiter_source: tuple[str, str] | None = None
# Threads of one process (gunicorn's, gRPC's) build the limiter once between them:
# limits loads the redis client lazily, and two threads doing that at once fail.
_limiter_lock = threading.Lock()


def limiter() -> RateLimiter:
    """This process's limiter, rebuilt when the settings it came from change (tests)."""
    global _limiter, _limiter_source
    source = (settings.SCHEDULER_RATE_LIMIT, settings.CELERY_BROKER_URL)
    current = _limiter
    if current is not None and source == _limiter_source:
        return current
    with _limiter_lock:
        if _limiter is None or source != _limiter_source:
            _limiter = RateLimiter(parse_rates(source[0]), storage_for(source[1]))
            _limiter_source = source
        return _limiter


def hit(key: str) -> None:
    """Count one request of the token ``key`` against SCHEDULER_RATE_LIMIT."""
    rates = limiter()
    if rates.limits:
        rates.hit(key)


@register()
def check_rate_limit(**_: Any) -> list[CheckMessage]:
    try:
        parse_rates(settings.SCHEDULER_RATE_LIMIT)
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="tasks_app.E101")]
    return []
