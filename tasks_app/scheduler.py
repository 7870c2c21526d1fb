"""The Scheduler: the public face of the platform, one method per operation.

Every public method here becomes an RPC of the gRPC service and has an HTTP route, so
the signatures are the API: change them with care. Other Django code of a deployment
calls it directly::

    from tasks_app.scheduler import get_scheduler

    uuid = get_scheduler().add_task(b"...")

Call it outside a transaction of your own: an admission holds the shared admission lock
until the transaction around it commits, and its message is only sent after that commit.
"""

from __future__ import annotations

import functools
import math
import threading
import time

from . import admission
from .admission import Admission, AdmissionPolicy
from .config import scheduler_config
from .errors import BadRequest
from .find import parse_uuid
from .interfaces import (
    UUID,
    FindOperator,
    Processor,
    SchedulerPhase,
    State,
    Task,
    TaskPage,
)
from .storage import DjangoTaskStorage

DRAIN_POLL_SECONDS = 0.2
MAX_FIND_LIMIT = 1000


class Scheduler:
    """Admits requests, bounds the queue, caps concurrency, and can be closed."""

    def __init__(
        self,
        storage: DjangoTaskStorage,
        processor: Processor,
        num_workers: int,
        queue_size: int,
        *,
        max_request_bytes: int | None = None,
        accepting_here: bool = True,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, not {num_workers}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.storage = storage
        self.processor = processor
        self.num_workers = num_workers
        self.queue_size = queue_size
        self.max_request_bytes = (
            max_request_bytes or scheduler_config().max_request_bytes
        )
        self.accepting_here = accepting_here

    @classmethod
    def from_settings(cls) -> Scheduler:
        """The scheduler every process of a deployment builds from the same settings."""
        config = scheduler_config()
        return cls(
            DjangoTaskStorage(),
            _LazyProcessor(config.processor),
            config.num_workers,
            config.queue_size,
            max_request_bytes=config.max_request_bytes,
            accepting_here=config.accepting,
        )

    @property
    def _policy(self) -> AdmissionPolicy:
        return AdmissionPolicy(
            queue_size=self.queue_size,
            num_workers=self.num_workers,
            max_request_bytes=self.max_request_bytes,
            accepting_here=self.accepting_here,
        )

    def add_task(self, request: bytes) -> Admission:
        """Admit a request; an identical one already known answers its UUID instead.

        Refused when closed (duplicates included), when the queue is full (duplicates
        still answered), and when empty or over the size limit.
        """
        return admission.admit(request, self._policy, using=self.storage.using)

    def get_task(self, uuid: UUID) -> Task:
        """The task without its bytes; ``LookupError`` if unknown."""
        return self.storage.get_without_bytes(parse_uuid(uuid))

    def find_tasks(
        self, operators: list[FindOperator], limit: int = 100, cursor: str | None = None
    ) -> TaskPage:
        """A page of the tasks for which every operator holds, newest first."""
        return self.storage.find_page(operators, limit, cursor or None)

    def retry(self, uuid: UUID) -> Task:
        """Queue a task in ``error`` again under the same UUID, with a fresh budget."""
        normalised = parse_uuid(uuid)
        admission.readmit(normalised, self._policy, using=self.storage.using)
        return self.get_task(normalised)

    def close(self) -> State:
        """Refuse new requests on every replica from now on; accepted tasks still run."""
        admission.set_closed(True, using=self.storage.using)
        return self.state()

    def open(self) -> State:
        """Accept requests again."""
        admission.set_closed(False, using=self.storage.using)
        return self.state()

    def state(self) -> State:
        """Accepting, draining or drained, with the counts behind it."""
        queued, processing = self.storage.count_unfinished()
        closed = not self.accepting_here or admission.is_closed(self.storage.using)
        if not closed:
            phase = SchedulerPhase.ACCEPTING
        elif queued or processing:
            phase = SchedulerPhase.DRAINING
        else:
            phase = SchedulerPhase.DRAINED
        return State(
            state=phase,
            closed=closed,
            queued=queued,
            processing=processing,
            num_workers=self.num_workers,
            queue_size=self.queue_size,
        )

    def wait_drained(
        self, timeout: float, *, stop: threading.Event | None = None
    ) -> bool:
        """Block until closed with nothing queued or processing, or ``timeout`` seconds.

        ``timeout`` may be infinite. The wait also ends, answering False, once ``stop``
        is set: over gRPC, when the call is cancelled, passes its deadline, or the
        server stops.
        """
        # NaN passes every comparison as False: it would never time out.
        if math.isnan(timeout) or timeout < 0:
            raise BadRequest(f"timeout must be 0 or more seconds, not {timeout}")
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        while True:
            if self.state().state == SchedulerPhase.DRAINED:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # An Event, not a sleep, so that a stop wakes the wait at once.
            if stop.wait(min(DRAIN_POLL_SECONDS, remaining)):
                return False


class _LazyProcessor:
    """The configured processor, built on first use: web processes never call it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, data: bytes) -> bytes:
        from .processors import load_processor

        return load_processor(self.path).process(data)


@functools.cache
def get_scheduler() -> Scheduler:
    """This process's scheduler, built from settings on first use."""
    return Scheduler.from_settings()
