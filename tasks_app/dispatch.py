"""Publishing wake-ups to Celery, only after the task's row is committed.

A message carries nothing but a task UUID: the bytes stay in the database. A message is
a hint that there is work, never the work itself, so one that is lost, duplicated or
redelivered late changes nothing but timing (the reconciler publishes lost ones again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from .wakeup_publisher import WakeUpPublisher

log = logging.getLogger(__name__)

RUN_TASK = "tasks_app.run_task"


def prepare() -> None:
    """Do now what Celery would do during this process's first publish.

    Celery imports its task modules, finalizes the app and loads the broker transport
    on the first ``send_task``: about 100 ms that the first request admitted by each web
    or gRPC process would wait for. Nothing here reaches the broker, so a broker that is
    down delays nothing; the first publish still opens the connection.
    """
    from scheduler_project.celery import app

    try:
        app.loader.import_default_modules()
        app.finalize(auto=True)
        app.amqp.router  # noqa: B018 (built on first access)
        app.connection_for_write().transport  # noqa: B018 (imports the transport)
        app.producer_pool  # noqa: B018
    except Exception:  # a misconfigured broker URL is reported by the first publish
        log.warning("could not prepare the broker client ahead of time", exc_info=True)


def publish(uuids: Iterable[str]) -> int:
    """Send one message per UUID now; a broker failure is logged, not raised.

    On Redis, each message is one LPUSH of a text Celery built once for this process
    (``wakeup_publisher``); on other brokers, Celery's ``send_task``.
    """
    from scheduler_project.celery import app

    from . import wakeup_publisher

    sent = 0
    for uuid in uuids:
        try:
            publisher = wakeup_publisher.for_this_process()
            if publisher is not None:
                publisher.publish(uuid)
            else:
                app.send_task(RUN_TASK, args=[uuid], task_id=uuid)
        except (
            Exception
        ) as exc:  # any broker failure: the database still holds the task
            _not_confirmed(uuid, exc)
        else:
            sent += 1
    return sent


def _not_confirmed(uuid: str, exc: Exception) -> None:
    # A timeout may come after the broker took the message: the wake-up can still
    # arrive, and one more from the reconciler then runs nothing twice.
    log.warning(
        "task %s: publish not confirmed by the broker (%s: %s); the wake-up may "
        "arrive late or not at all, and the reconciler publishes it again while "
        "the task waits",
        uuid,
        type(exc).__name__,
        exc,
        extra={"task_uuid": uuid, "event": "publish_failed"},
    )


class WakeUpAhead:
    """A wake-up sent before its admission commits, its answer read after the commit.

    The commit then overlaps the broker and the worker's way to its claim, and a claim
    that arrives first waits for the commit (migration 0009). Nothing waits for Redis
    inside the transaction: the LPUSH is only written there, on a connection already
    open, and its answer is read on the way out of the ``with`` block, after the
    commit or its failure. A wake-up for an admission that rolled back runs nothing.

    Only on Redis, with this process's ``wakeup_publisher`` already built and one of
    its connections idle; otherwise the wake-up is sent on the way out (on a new
    connection, then kept for the next one), as is one whose connection turns out to
    have been dropped (a restarted Redis).
    """

    def __init__(self) -> None:
        self._uuid: str | None = None
        self._publisher: WakeUpPublisher | None = None
        self._sent_on: Any = None

    def __enter__(self) -> WakeUpAhead:
        return self

    def send(self, uuid: str) -> None:
        """Wake a worker for ``uuid``: now if possible, else on the way out."""
        from . import wakeup_publisher

        # Nothing here may fail the admission, whose transaction is open: a wake-up
        # that cannot go now goes after the commit.
        self._uuid = uuid
        try:
            self._publisher = wakeup_publisher.built_for_this_process()
            if self._publisher is not None:
                self._sent_on = self._publisher.send_ahead(uuid)
        except Exception:
            self._sent_on = None

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        uuid, publisher, connection = self._uuid, self._publisher, self._sent_on
        if uuid is None:
            return
        # An exception here is the admission's (its commit, say): its task may not
        # exist, so nothing more is sent for it; an LPUSH already written is read back.
        admitted = exc_type is None
        try:
            if publisher is not None and connection is not None:
                publisher.confirm(connection)
            elif not admitted:
                return
            elif publisher is None:
                publish([uuid])
            else:
                publisher.confirm(publisher.send_on_a_new_connection(uuid))
        except RedisConnectionError as exc:
            # A kept connection the server had dropped (a restarted Redis) took the
            # LPUSH without a word: the pool connects again. A new connection that
            # failed has already waited its timeout; the reconciler is next.
            if admitted and connection is not None:  # sent on a kept connection
                publish([uuid])
            elif admitted:
                _not_confirmed(uuid, exc)
        except Exception as exc:
            if admitted:
                _not_confirmed(uuid, exc)


def can_wake_ahead() -> bool:
    """Whether this process can send a wake-up before its admission commits: on a
    Redis broker, once its publisher is built (by the process's first wake-up)."""
    from . import wakeup_publisher

    try:
        return wakeup_publisher.built_for_this_process() is not None
    except Exception:  # settings half-built at start: the plain path is always right
        return False


def publish_on_commit(uuids: list[str], using: str = "default") -> None:
    """Publish once the current transaction commits, or never if it rolls back.

    Publishing inside the transaction would let a worker look for a row that is not yet
    visible; publishing after a rollback would announce a task that does not exist.
    """
    if uuids:
        transaction.on_commit(lambda: publish(uuids), using=using)
