"""Dramatiq with its Redis broker; the actor records when it finished."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import redis

from bench.services import Services
from bench.systems.process import Daemon, base_env

DRAMATIQ = str(Path(sys.executable).with_name("dramatiq"))


class Dramatiq:
    name = "dramatiq"

    def __init__(self, services: Services, cap: int, workdir: Path) -> None:
        self.cap = cap
        # The cap as processes x threads: two processes (one per core) of two threads.
        processes = 2 if cap % 2 == 0 else 1
        threads = cap // processes
        os.environ["BENCH_BROKER_URL"] = services.broker_url
        from bench.apps import dramatiq_actors

        self.actor = dramatiq_actors.work
        self.done_key = dramatiq_actors.DONE_KEY
        self.store = redis.Redis.from_url(services.broker_url)
        self.worker = Daemon(
            [
                DRAMATIQ,
                "bench.apps.dramatiq_actors",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            base_env(BENCH_BROKER_URL=services.broker_url),
            workdir / "dramatiq.log",
        )

    def submit(self, seconds: float, payload: bytes) -> str:
        key = uuid.uuid4().hex
        self.actor.send(key, seconds, payload.decode())
        return key

    def count_finished(self, handles: list[str]) -> int:
        return len(self.finished(handles))

    def finished(self, handles: list[str]) -> dict[str, float]:
        done: dict[str, float] = {}
        for start in range(0, len(handles), 500):
            chunk = handles[start : start + 500]
            for handle, raw in zip(
                chunk, self.store.hmget(self.done_key, chunk), strict=True
            ):
                if raw is not None:
                    done[handle] = float(raw)
        return done

    def count_failed(self, handles: list[str]) -> int:
        """Always none: the actor writes its time only when it succeeds, and it is
        not retried, so a failed task never finishes and its figure's wait times out."""
        return 0

    def close(self) -> None:
        self.worker.stop()
        print(self.worker.log_tail(3), file=sys.stderr)
