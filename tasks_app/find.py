"""Find operators to ORM filters: validation of keys, operators and values, in one place.

Values are parsed to their field's type here, so that the ORM binds them as query
parameters; nothing from a request is ever spliced into SQL.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid as uuid_module
from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import Q

from .errors import BadRequest, shown
from .interfaces import UUID, FindOperator, TaskStatus


def parse_uuid(value: str) -> UUID:
    """Normalise a UUID to lowercase and hyphenated; anything else is bad input."""
    try:
        return UUID(str(uuid_module.UUID(value.strip())))
    except (ValueError, AttributeError, TypeError):
        raise BadRequest(f"{shown(value)} is not a UUID") from None


def _parse_status(value: str) -> str:
    try:
        return TaskStatus(value).value
    except ValueError:
        allowed = ", ".join(s.value for s in TaskStatus)
        raise BadRequest(f"status {shown(value)} is not one of {allowed}") from None


# An optional sign and ASCII digits: Python's int() also takes other scripts' digits and
# underscores, which no client means as a number. Thirty digits are past every column's
# range already (Django answers those lookups without asking the database).
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")


def _parse_int(value: str) -> int:
    stripped = value.strip(" \t")
    if _INTEGER.fullmatch(stripped) is None:
        raise BadRequest(
            f"{shown(value)} is not an integer (ASCII digits, at most 30, and an "
            "optional sign)"
        )
    return int(stripped)


def parse_datetime(value: str) -> dt.datetime:
    """ISO 8601; a time without an offset is taken as UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{shown(value)} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    # In UTC: PostgreSQL takes offsets up to 15:59 only, Python's go to 23:59.
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise BadRequest(
            f"{shown(value)} is outside the years 1 to 9999 in UTC"
        ) from None


def _parse_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL: the query would fail in the driver, as a 500.
    if "\x00" in value:
        raise BadRequest("a find value cannot contain a NUL character")
    return value


def _parse_hash(value: str) -> str:
    return _parse_text(value).strip().lower()


# key -> (model field, parser, whether order comparisons make sense)
_FIELDS: dict[str, tuple[str, Callable[[str], Any], bool]] = {
    "uuid": ("uuid", parse_uuid, False),
    "hash": ("hash", _parse_hash, False),
    "status": ("status", _parse_status, False),
    "error": ("error", _parse_text, False),
    "worker": ("worker", _parse_text, False),
    "attempts": ("attempts", _parse_int, True),
    "request_size": ("request_size", _parse_int, True),
    "result_size": ("result_size", _parse_int, True),
    "created_at": ("created_at", parse_datetime, True),
    "started_at": ("started_at", parse_datetime, True),
    "finished_at": ("finished_at", parse_datetime, True),
}
FIND_KEYS = tuple(_FIELDS)

_LOOKUPS = {"=": "exact", "!=": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
FIND_OPERATORS = (*_LOOKUPS, "in")

# Over HTTP a Find travels in the request line, which gunicorn caps at 8190 bytes: 200
# UUIDs fit in it with room to spare.
MAX_IN_VALUES = 200


def operator_to_q(operator: FindOperator) -> Q:
    """One condition as a ``Q``; a ``BadRequest`` (a ``ValueError``) names what is wrong."""
    if operator.key not in _FIELDS:
        raise BadRequest(
            f"unknown find key {shown(operator.key)}; known keys: {', '.join(FIND_KEYS)}"
        )
    if operator.operator not in FIND_OPERATORS:
        raise BadRequest(
            f"unknown find operator {shown(operator.operator)}; "
            f"known operators: {' '.join(FIND_OPERATORS)}"
        )
    field, parse, ordered = _FIELDS[operator.key]
    if operator.operator in ("<", "<=", ">", ">=") and not ordered:
        raise BadRequest(
            f"operator {shown(operator.operator)} does not apply to {shown(operator.key)}"
        )

    if operator.operator == "in":
        raw = [part for part in operator.value.split(",") if part != ""]
        if not raw:
            raise BadRequest(f"'in' for {operator.key!r} needs at least one value")
        if len(raw) > MAX_IN_VALUES:
            raise BadRequest(f"'in' takes at most {MAX_IN_VALUES} values")
        return Q(**{f"{field}__in": [parse(part) for part in raw]})

    value = parse(operator.value)
    condition = Q(**{f"{field}__{_LOOKUPS[operator.operator]}": value})
    return ~condition if operator.operator == "!=" else condition


def operators_to_q(operators: Iterable[FindOperator]) -> Q:
    """All conditions must hold."""
    combined = Q()
    for operator in operators:
        if not isinstance(operator, FindOperator):
            raise BadRequest(f"{operator!r} is not a FindOperator")
        combined &= operator_to_q(operator)
    return combined
