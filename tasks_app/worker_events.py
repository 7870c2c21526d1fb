"""The worker's consumer: its task events go out after the task has started, in batches.

With task events on (Flower needs them), Celery's consumer buffers each event and asks
its event loop to publish the buffer at the start of the loop's next turn. That turn
comes before the one that writes the task to a pool process, so every wake-up waited
for a Redis publish of its ``task-received`` event before its pool process saw it, and
the ``task-started`` event of the same task was published again while the task ran, on
a machine whose cores the task and the database share. Measured on the paced round
trip of no-op tasks (2 cores): 0.7 ms of the median between the publish of a wake-up
and its claim, and twice that in the tail.

Here the buffer is published once, ``EVENTS_FLUSH_DELAY`` after the first event that
went into it, as one message of the ``task.multi`` kind that Celery's receivers (Flower,
``celery events``) already read. Flower sees a task a few milliseconds later; nothing
else changes, and a buffer that fills up (Celery's ``buffer_limit``) is still published
at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)

# Long enough for a short task to be delivered, claimed and finished first; short
# enough that an operator watching Flower never notices.
EVENTS_FLUSH_DELAY = 0.010


class Consumer(CeleryConsumer):
    """Celery's consumer, with the publishing of buffered task events deferred."""

    # Celery's own attributes, which celery-types does not declare.
    hub: Any
    _flush_events: Callable[[], None]

    _events_flush_pending = False

    # celery-types gives the hook a return value; Celery ignores what it returns.
    def on_send_event_buffered(self) -> None:  # type: ignore[override]
        if not self.hub:
            super().on_send_event_buffered()
            return
        if not self._events_flush_pending:
            self._events_flush_pending = True
            self.hub.call_later(EVENTS_FLUSH_DELAY, self._flush_deferred_events)

    def _flush_deferred_events(self) -> None:
        self._events_flush_pending = False
        self._flush_events()

    def shutdown(self) -> None:
        # The events of the last tasks may still wait for their timer, which a stopping
        # event loop never fires; a broker already gone loses them, as Celery's own
        # buffer would.
        try:
            self._flush_events()
        except Exception as exc:
            log.warning(
                "could not publish the worker's last task events (%s: %s); Flower "
                "misses them",
                type(exc).__name__,
                exc,
            )
        super().shutdown()
