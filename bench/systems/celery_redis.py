"""Plain Celery: Redis broker, Redis result backend; ``date_done`` is the completion."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis

from bench.services import Services
from bench.systems.process import Daemon, base_env
from tests.harness import CELERY

META_PREFIX = "celery-task-meta-"


def celery_worker_argv(app: str, cap: int) -> list[str]:
    return [
        CELERY,
        "-A",
        app,
        "worker",
        "-l",
        "info",
        "-c",
        str(cap),
        "-P",
        "prefork",
        "--without-mingle",
        "--without-gossip",
    ]


def parse_date_done(value: str) -> float:
    at = dt.datetime.fromisoformat(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.timestamp()


class CeleryRedis:
    name = "celery_redis"

    def __init__(self, services: Services, cap: int, workdir: Path) -> None:
        self.cap = cap
        broker, results = services.redis_db_url(0), services.redis_db_url(1)
        os.environ["BENCH_BROKER_URL"] = broker
        os.environ["BENCH_RESULT_URL"] = results
        from bench.apps.celery_plain import app

        self.app = app
        self.results = redis.Redis.from_url(results)
        env = base_env(BENCH_BROKER_URL=broker, BENCH_RESULT_URL=results)
        self.worker = Daemon(
            celery_worker_argv("bench.apps.celery_plain", cap),
            env,
            workdir / "celery_redis.log",
        )

    def submit(self, seconds: float, payload: bytes) -> str:
        return self.app.send_task("bench.work", args=[seconds, payload.decode()]).id

    def count_finished(self, handles: list[str]) -> int:
        total = 0
        for start in range(0, len(handles), 500):
            keys = [META_PREFIX + h for h in handles[start : start + 500]]
            total += int(self.results.exists(*keys))
        return total

    def finished(self, handles: list[str]) -> dict[str, float]:
        return {
            handle: parse_date_done(meta["date_done"])
            for handle, meta in self._metas(handles)
        }

    def count_failed(self, handles: list[str]) -> int:
        return sum(meta["status"] == "FAILURE" for _, meta in self._metas(handles))

    def _metas(self, handles: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """The result backend's record of each finished handle."""
        metas: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(handles), 500):
            chunk = handles[start : start + 500]
            for handle, raw in zip(
                chunk, self.results.mget([META_PREFIX + h for h in chunk]), strict=True
            ):
                if raw is not None:
                    metas.append((handle, json.loads(raw)))
        return metas

    def close(self) -> None:
        self.worker.stop()
        print(self.worker.log_tail(3), file=sys.stderr)
