"""Properties of Find and the storage under hostile input, checked by Hypothesis.

Random keys, operators, values, cursors and UUIDs either work or raise ``ValueError``
(``LookupError`` for a UUID that is well-formed but unknown), never anything else, and
never change a row: the table's count and checksum are the same before and after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid as uuid_module
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_app.find import FIND_KEYS, FIND_OPERATORS, operators_to_q
from tasks_app.interfaces import UUID, FindOperator, Task, TaskStatus
from tasks_app.storage import DjangoTaskStorage, encode_cursor

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values near what parses (numbers, times, statuses, UUIDs in any case) and far from it.
uuids = (
    st.uuids()
    .map(str)
    .flatmap(
        lambda u: st.sampled_from([u, u.upper(), u.replace("-", ""), f" {u} ", u[:-1]])
    )
)
# Python takes offsets up to 23:59; PostgreSQL only up to 15:59.
offsets = st.timedeltas(
    min_value=dt.timedelta(hours=-23, minutes=-59),
    max_value=dt.timedelta(hours=23, minutes=59),
).map(lambda delta: dt.timezone(dt.timedelta(minutes=delta // dt.timedelta(minutes=1))))
values = st.one_of(
    st.text(),
    st.text(alphabet="0123456789-+:.,TZ ", max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.datetimes(timezones=st.none() | st.timezones() | offsets).map(
        lambda d: d.isoformat()
    ),
    st.text().map(lambda text: text + "\x00"),
    st.sampled_from([s.value for s in TaskStatus] + ["DONE", "", ",", "done,"]),
    uuids,
    st.lists(st.one_of(uuids, st.integers().map(str), st.text(max_size=5))).map(
        ",".join
    ),
    st.just("\x00"),
    st.just("'; DROP TABLE scheduler_task; --"),
)
operators = st.builds(
    FindOperator,
    key=st.one_of(st.sampled_from(FIND_KEYS), st.text(max_size=12)),
    operator=st.one_of(st.sampled_from(FIND_OPERATORS), st.text(max_size=3)),
    value=values,
)
operator_lists = st.lists(operators, max_size=4)


def seed_tasks(count: int = 12) -> list[Task]:
    storage = DjangoTaskStorage()
    tasks = []
    for n in range(count):
        request = f"request {n}".encode()
        status = list(TaskStatus)[n % 4]
        task = Task(
            uuid=UUID(str(uuid_module.uuid4())),
            hash=hashlib.sha256(request).hexdigest(),
            status=status,
            request=request,
            result=b"result" if status == TaskStatus.DONE else None,
            error="it failed" if status == TaskStatus.ERROR else "",
            attempts=n % 3,
            created_at=T0 + dt.timedelta(seconds=n),
            started_at=T0 + dt.timedelta(seconds=n + 1) if n % 2 else None,
            finished_at=T0 + dt.timedelta(seconds=n + 2)
            if status.is_finished
            else None,
            request_size=len(request),
            result_size=6 if status == TaskStatus.DONE else None,
            worker=f"w{n % 2}",
        )
        storage.store(task)
        tasks.append(task)
    return tasks


def table_checksum() -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY uuid), ''))"
            " FROM scheduler_task t"
        )
        count, digest = cursor.fetchone()
    return int(count), str(digest)


def raises_only(
    allowed: tuple[type[BaseException], ...], call: Callable[[], Any]
) -> BaseException | None:
    try:
        call()
    except allowed as exc:
        assert str(exc), "an error must say what is wrong"
        return exc
    return None


# --- the parser, without a database -------------------------------------------------------


@EXAMPLES
@given(operator_lists)
def test_find_parser_raises_only_value_errors_naming_the_problem(
    ops: list[FindOperator],
) -> None:
    raises_only((ValueError,), lambda: operators_to_q(ops))


@EXAMPLES
@given(st.sampled_from(FIND_KEYS), st.sampled_from(FIND_OPERATORS), values)
def test_every_known_key_and_operator_either_parses_or_is_a_value_error(
    key: str, operator: str, value: str
) -> None:
    raises_only(
        (ValueError,), lambda: operators_to_q([FindOperator(key, operator, value)])
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("3", 3), (" 3\t", 3), ("+3", 3), ("-1", -1), ("0" * 30, 0)],
)
def test_an_integer_value_is_a_sign_and_ascii_digits(value: str, parsed: int) -> None:
    assert operators_to_q([FindOperator("attempts", "=", value)]) == operators_to_q(
        [FindOperator("attempts", "=", str(parsed))]
    )


@pytest.mark.parametrize(
    "value",
    ["\u0663", "\uff13", "1_000", "3.0", "", " ", "0x10", "1e3", "0" * 31, "\u00a03"],
)
def test_other_scripts_digits_underscores_and_decimals_are_not_integers(
    value: str,
) -> None:
    with pytest.raises(ValueError, match="is not an integer"):
        operators_to_q([FindOperator("attempts", "=", value)])


# --- the storage, on PostgreSQL -----------------------------------------------------------


@pytest.mark.django_db
@EXAMPLES
@given(ops=operator_lists, limit=st.integers(-5, 1200), cursor=st.none() | st.text())
def test_find_and_find_page_never_raise_but_value_error_and_never_write(
    ops: list[FindOperator], limit: int, cursor: str | None
) -> None:
    storage = DjangoTaskStorage()
    if not storage.rows().exists():
        seed_tasks()
    before = table_checksum()

    found = raises_only((ValueError,), lambda: storage.find(ops))
    raises_only((ValueError,), lambda: storage.find_page(ops, limit, cursor))

    assert table_checksum() == before
    if found is None and 1 <= limit <= 1000 and cursor is None:
        everything = [task.uuid for task in storage.find(ops)]
        page = storage.find_page(ops, limit, None)
        assert [task.uuid for task in page.items] == everything[:limit]


@pytest.mark.django_db
@EXAMPLES
@given(uuid=st.one_of(st.text(), uuids))
def test_get_raises_value_error_or_lookup_error_and_never_writes(uuid: str) -> None:
    storage = DjangoTaskStorage()
    if not storage.rows().exists():
        seed_tasks()
    before = table_checksum()

    for read in (storage.get, storage.get_without_bytes, storage.get_result):
        raises_only((ValueError, LookupError), lambda read=read: read(UUID(uuid)))

    assert table_checksum() == before


@pytest.mark.django_db
def test_the_cursor_of_one_page_leads_to_the_next_and_a_forged_one_is_a_value_error() -> (
    None
):
    tasks = seed_tasks()
    storage = DjangoTaskStorage()
    first = storage.find_page([], 5, None)
    assert first.next_cursor == encode_cursor(first.items[-1])
    second = storage.find_page([], 5, first.next_cursor)
    assert not {t.uuid for t in first.items} & {t.uuid for t in second.items}
    assert len(tasks) == 12
    with pytest.raises(ValueError, match="cursor"):
        storage.find_page([], 5, "bm90IGEgY3Vyc29y")


# Values that have broken parsers and drivers elsewhere: NUL (PostgreSQL text), lone
# surrogates (UTF-8), integers past 64 bits, times at the edges of the calendar.
NASTY_VALUES = [
    "\x00",
    "done\x00",
    "\ud800",
    "9" * 40,
    "-" + "9" * 40,
    "1_000",
    "\u0663",
    "nan",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2030-02-30T00:00:00",
    ",,,",
    " ",
]


@pytest.mark.django_db
@pytest.mark.parametrize("key", FIND_KEYS)
def test_every_key_and_operator_survives_the_nasty_values(key: str) -> None:
    seed_tasks(4)
    storage = DjangoTaskStorage()
    before = table_checksum()

    for operator in FIND_OPERATORS:
        for value in NASTY_VALUES:
            ops = [FindOperator(key, operator, value)]
            raises_only((ValueError,), lambda ops=ops: storage.find(ops))
            raises_only((ValueError,), lambda ops=ops: storage.find_page(ops, 10, None))

    assert table_checksum() == before


# --- the same through HTTP ----------------------------------------------------------------

query_names = st.one_of(
    st.sampled_from(FIND_KEYS).flatmap(
        lambda key: st.sampled_from(
            [key, *(f"{key}__{s}" for s in ("ne", "lt", "lte", "gt", "gte", "in", "x"))]
        )
    ),
    st.sampled_from(["limit", "cursor"]),
    st.text(min_size=1, max_size=12),
)


@pytest.mark.django_db
@EXAMPLES
@given(st.lists(st.tuples(query_names, values), max_size=4))
def test_find_over_http_answers_200_or_400_and_never_writes(
    client: Client, query: list[tuple[str, str]]
) -> None:
    if not DjangoTaskStorage().rows().exists():
        seed_tasks()
    before = table_checksum()

    response = client.get("/api/tasks", query)

    assert response.status_code in (200, 400), (query, response.content)
    assert response.json().get("error", "bad_request") == "bad_request"
    assert table_checksum() == before
