"""The services one benchmark runs on: a fresh PostgreSQL database and a redis-server.

Each benchmark makes a database of its own (``bench_<name>_<pid>``) and drops it at the
end, and starts a redis-server on a free port, so that two runs, or the tests running
next to them, never meet.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from tests.harness import RedisServer, running_redis

# BENCH_POSTGRES_URL: the server the benchmark databases are made on (a superuser).
ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True, slots=True)
class Services:
    database_url: str
    redis: RedisServer

    @property
    def broker_url(self) -> str:
        return self.redis.url

    def redis_db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/{db}"


def _database_url(name: str) -> str:
    return re.sub(r"/[^/]*$", f"/{name}", ADMIN_URL)


@contextmanager
def fresh_database(name: str) -> Iterator[str]:
    """A new empty database, dropped (with any connection left to it) on the way out."""
    database = f"bench_{re.sub(r'[^a-z0-9_]', '_', name.lower())}_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield _database_url(database)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@contextmanager
def services(name: str) -> Iterator[Services]:
    with fresh_database(name) as database_url, running_redis() as redis:
        yield Services(database_url, redis)
