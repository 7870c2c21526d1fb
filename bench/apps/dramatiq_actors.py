"""Dramatiq with its Redis broker. No result backend is configured by default, so the
actor itself writes the time it finished to a Redis hash, which the benchmark reads."""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
DONE_KEY = "bench:done"

dramatiq.set_broker(RedisBroker(url=BROKER_URL))
_store = redis.Redis.from_url(BROKER_URL)


@dramatiq.actor(actor_name="bench_work", max_retries=0)
def work(key: str, seconds: float, payload: str) -> None:
    if seconds:
        time.sleep(seconds)
    _store.hset(DONE_KEY, key, repr(time.time()))
