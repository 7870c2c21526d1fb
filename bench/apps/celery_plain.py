"""Plain Celery: Redis as broker and as result backend, stock settings otherwise."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery(
    "bench_celery_plain",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/1"),
)


@app.task(name="bench.work")
def work(seconds: float, payload: str) -> str:
    if seconds:
        time.sleep(seconds)
    return payload
