"""Fixtures over real services: the test database on PostgreSQL, a private redis-server,
and Celery worker processes. A missing service fails the run; nothing is skipped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, RedisServer, running_redis

# One database per run, so that two runs on one machine never meet.
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)[:8]


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError(
            "the tests run on PostgreSQL: set DATABASE_URL, e.g. "
            "postgres://postgres@127.0.0.1:5432/test (make test does)"
        )
    database.setdefault("TEST", {})["NAME"] = f"test_scheduler_{RUN_ID}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test session's own; tests may flush or restart it."""
    with running_redis() as server:
        from scheduler_project.celery import app

        app.conf.broker_url = server.url
        os.environ["CELERY_BROKER_URL"] = server.url
        yield server


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, running (a test before may have stopped it) and empty."""
    if not redis_server.ping():
        redis_server.start()
    redis_server.flushall()
    yield redis_server


@pytest.fixture(scope="session")
def live_database_url(django_db_setup: None, django_db_blocker: object) -> str:
    """A URL of the test database, for the worker processes a test starts."""
    from django.db import connection

    params = connection.settings_dict
    user = params.get("USER") or "postgres"
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{params['NAME']}"


@pytest.fixture
def cluster(
    transactional_db: None,
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[Cluster]:
    """Workers on the test database and the session's Redis, stopped after the test."""
    if not redis_server.ping():
        redis_server.start()
    redis_server.flushall()
    cluster = Cluster(live_database_url, redis_server.url, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def scheduler(transactional_db: None, redis_server: RedisServer):  # type: ignore[no-untyped-def]
    """The scheduler as a deployment builds it, publishing to the session's Redis."""
    from tasks_app.scheduler import Scheduler

    return Scheduler.from_settings()
