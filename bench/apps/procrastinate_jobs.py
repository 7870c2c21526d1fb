"""Procrastinate: the queue is PostgreSQL itself (LISTEN/NOTIFY wakes the worker)."""

from __future__ import annotations

import os
import time

import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_DATABASE_URL", "postgres://127.0.0.1/postgres")
    )
)


@app.task(name="bench.work")
def work(seconds: float, payload: str) -> str:
    if seconds:
        time.sleep(seconds)
    return payload
