"""The waits of one gRPC server: how many may be pending, and how each learns to end.

A wait is an RPC whose method blocks until a condition holds (``WaitDrained``). It holds
one of the server's threads for as long as it blocks, so it must end when its call does,
and waits together must leave threads for every other call, health checks included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from ..errors import Refused

log = logging.getLogger(__name__)


class TooManyWaits(Refused):
    """This server holds as many waits as it allows; call again later, or elsewhere."""

    code = "too_many_waits"
    retry_after_seconds = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this server already holds {limit} waits, its limit (half of rungrpc "
            "--threads, so that other calls are still answered); call again later, "
            "or ask another replica"
        )


class Waits:
    """At most ``limit`` waits at once, each given an Event set when its call ends."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the wait limit must be at least 1, not {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._stops: set[threading.Event] = set()
        self._ended = False

    @contextmanager
    def held(self, context: grpc.ServicerContext) -> Iterator[threading.Event]:
        """A place among the waits, for the length of the block; else TooManyWaits.

        The Event yielded is set when the call ends: cancelled by its client, past its
        deadline, cancelled by the server at the end of its grace, or by ``end_all``.
        """
        stop = threading.Event()
        with self._lock:
            if len(self._stops) >= self.limit:
                raise TooManyWaits(self.limit)
            self._stops.add(stop)
            if self._ended:
                stop.set()
        # grpcio runs the callbacks on its polling thread as soon as the call ends, for
        # any reason; polling context.is_active() instead would add a lock round trip
        # per poll and still wake up to a poll interval late. False: it ended already.
        if not context.add_callback(stop.set):
            stop.set()
        try:
            yield stop
        finally:
            with self._lock:
                self._stops.discard(stop)

    def end_all(self) -> None:
        """End every pending wait, and any that starts from now on, at once."""
        with self._lock:
            self._ended = True
            pending = list(self._stops)
        for stop in pending:
            stop.set()
        if pending:
            log.info(
                "grpc: ended %d pending waits; they answer as the scheduler stands",
                len(pending),
                extra={"event": "grpc_waits_ended", "waits": len(pending)},
            )
