"""Publishing wake-ups to Celery, only after the task's row is committed.

A message carries nothing but a task UUID: the bytes stay in the database. A message is
a hint that there is work, never the work itself, so one that is lost, duplicated or
redelivered late changes nothing but timing (the reconciler publishes lost ones again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction

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
            # A timeout may come after the broker took the message: the wake-up can
            # still arrive, and one more from the reconciler then runs nothing twice.
            log.warning(
                "task %s: publish not confirmed by the broker (%s: %s); the wake-up may "
                "arrive late or not at all, and the reconciler publishes it again while "
                "the task waits",
                uuid,
                type(exc).__name__,
                exc,
                extra={"task_uuid": uuid, "event": "publish_failed"},
            )
        else:
            sent += 1
    return sent


def publish_on_commit(uuids: list[str], using: str = "default") -> None:
    """Publish once the current transaction commits, or never if it rolls back.

    Publishing inside the transaction would let a worker look for a row that is not yet
    visible; publishing after a rollback would announce a task that does not exist.
    """
    if uuids:
        transaction.on_commit(lambda: publish(uuids), using=using)
