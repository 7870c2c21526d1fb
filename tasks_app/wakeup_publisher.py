"""Wake-ups sent to Redis in one command each, in the message Celery itself would send.

Celery's ``send_task`` builds every message from scratch: the route, the headers, a
kombu producer, a Redis client object made for the one publish. On a 2-vCPU machine
that spends 0.6 to 0.9 ms before the LPUSH leaves after the process has been idle a
few milliseconds, and each admission waits for it before its task can start. Two
wake-ups differ only in their task UUID and kombu's delivery tag. So Celery and kombu
build one message per process, for a stand-in UUID, through their own ``send_task``
(only the final ``_put`` of kombu's channel is caught instead of sent), and each
publish writes its UUID into that text and sends it on a Redis client made once.

Only for a Redis broker reached directly (not through Sentinel), and only for a message
that goes straight to one queue (the anonymous exchange, Celery's default for a direct
queue); with any other broker or route, ``for_this_process`` answers ``None`` and the
caller uses ``send_task``. Celery's publish signals fire for the one message built
here, not for each wake-up (nothing in this project listens to them). A wake-up sent
here has no ``parent_id``, which Celery would set for a publish made inside a running
task; only Flower shows it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import uuid as uuid_module
from dataclasses import dataclass, field
from typing import Any

from .dispatch import RUN_TASK

log = logging.getLogger(__name__)

# Stand-ins for what changes between two wake-ups; neither can occur in a real message.
_STAND_IN_UUID = "00000000-0000-4000-8000-0000c0ffee00"
_STAND_IN_TAG = "00000000-0000-4000-8000-0000c0ffee01"
_STAND_IN_BODY = "wake-up-body-0000c0ffee02"

# kombu's names for the transports of redis://, rediss:// and redis+socket:// URLs.
_PLAIN_REDIS = frozenset({"redis", "rediss"})


@dataclass(frozen=True, slots=True)
class WakeUpPublisher:
    """Celery's wake-up message as text, and where and through what to push it."""

    key: str  # the Redis list the worker's consumer pops
    envelope: str  # kombu's JSON, with the stand-ins
    body: str  # Celery's JSON body, with the stand-in UUID (sent base64-encoded)
    client: Any  # redis.Redis on kombu's connection pool for this broker
    # The kombu connection and channel whose pool ``client`` uses, kept for as long as
    # this process publishes to that broker.
    connection: Any
    channel: Any
    # Connections of this process's own, each idle between two wake-ups sent ahead.
    idle: list[Any] = field(default_factory=list)
    idle_lock: threading.Lock = field(default_factory=threading.Lock)

    def message(self, uuid: str) -> str:
        # As a JSON string's inside, whatever the caller passed: both texts are JSON.
        uuid = json.dumps(uuid)[1:-1]
        body = base64.b64encode(self.body.replace(_STAND_IN_UUID, uuid).encode())
        return (
            self.envelope.replace(_STAND_IN_UUID, uuid)
            .replace(_STAND_IN_TAG, str(uuid_module.uuid4()))
            .replace(_STAND_IN_BODY, body.decode("ascii"))
        )

    def publish(self, uuid: str) -> None:
        self.client.lpush(self.key, self.message(uuid))

    # A wake-up sent while its admission's transaction is open, in two steps, so that
    # nothing waits for Redis inside the transaction: ``send_ahead`` writes the LPUSH
    # on a connection kept for this, if one is idle (no connecting, no health check),
    # and ``confirm`` reads the answer after the commit. These connections are not the
    # pool's, whose size kombu bounds for its own users.

    def send_ahead(self, uuid: str) -> Any | None:
        """Write the LPUSH of ``uuid``'s wake-up on an idle connection, if there is one.

        Returns the connection, for ``confirm``; ``None`` when none was idle.
        """
        with self.idle_lock:
            if not self.idle:
                return None
            connection = self.idle.pop()
        try:
            # An idle connection has nothing to read unless the server hung up (or
            # raises for it): a restarted Redis, an idle timeout on the way.
            if connection.can_read(timeout=0):
                connection.disconnect()
                return None
            connection.send_command(
                "LPUSH", self.key, self.message(uuid), check_health=False
            )
        except BaseException:
            connection.disconnect()
            raise
        return connection

    def send_on_a_new_connection(self, uuid: str) -> Any:
        """Connect a new connection and write ``uuid``'s wake-up on it, for ``confirm``.

        After the commit, when ``send_ahead`` found none idle: the connection is kept
        afterwards, so that the next wake-up can go ahead.
        """
        pool = self.client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        try:
            connection.send_command("LPUSH", self.key, self.message(uuid))
        except BaseException:
            connection.disconnect()
            raise
        return connection

    def confirm(self, connection: Any) -> None:
        """Read the answer to a sent LPUSH, and keep the connection for the next one.

        Raises Redis's error, if any; the connection is then dropped: a dropped
        connection raises ``redis.ConnectionError``, a silent Redis ``TimeoutError``.
        """
        try:
            connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        with self.idle_lock:
            self.idle.append(connection)

    def close(self) -> None:
        with self.idle_lock:
            for connection in self.idle:
                connection.disconnect()
            self.idle.clear()
        self.channel.close()
        self.connection.release()


# For which process and broker URL the publisher was built, or found not to apply.
_Made = tuple[int, str]

_lock = threading.Lock()
_built: tuple[_Made, WakeUpPublisher | None] | None = None


def built_for_this_process() -> WakeUpPublisher | None:
    """The publisher ``for_this_process`` has built for this process and broker, if
    any; never builds one (which would reach the broker)."""
    from scheduler_project.celery import app

    made: _Made = (os.getpid(), app.conf.broker_write_url or app.conf.broker_url)
    built = _built
    return built[1] if built is not None and built[0] == made else None


def for_this_process() -> WakeUpPublisher | None:
    """The publisher for this process and broker, built on first use; ``None``: use
    ``send_task``.

    A forked child builds its own, as its message names its own pid (Celery's
    ``origin``) and its sockets must be its own; so does a process whose broker URL
    changed. A build that fails (the broker is unreachable) raises, as a publish
    would, and is tried again at the next publish.
    """
    global _built
    from scheduler_project.celery import app

    made: _Made = (os.getpid(), app.conf.broker_write_url or app.conf.broker_url)
    built = _built
    if built is not None and built[0] == made:
        return built[1]
    with _lock:
        if _built is not None and _built[0] == made:
            return _built[1]
        publisher = build(app)  # raises when the broker is unreachable
        if publisher is None:
            log.info(
                "wake-ups go through Celery's send_task: the broker is not Redis "
                "reached directly (Sentinel is not), or the route of %s is not a "
                "direct queue",
                RUN_TASK,
                extra={"event": "wake_up_path"},
            )
        previous, _built = _built, (made, publisher)
        if (
            previous is not None
            and previous[1] is not None
            and previous[0][0] == made[0]
        ):
            previous[1].close()  # this process's, for another broker
        return publisher


def build(app: Any) -> WakeUpPublisher | None:
    """Have Celery and kombu make one wake-up for the stand-in UUID, and keep its text.

    ``None`` when this path does not apply: a broker other than plain Redis, a route
    through a named exchange (kombu would look its bindings up in Redis at each
    publish), a queue with priorities or an expiry (more than one list, or a command
    besides the LPUSH).
    """
    connection = app.connection_for_write()
    try:
        publisher = _build_on(app, connection)
    except BaseException:
        connection.release()
        raise
    if publisher is None:
        connection.release()
    return publisher


def _build_on(app: Any, connection: Any) -> WakeUpPublisher | None:
    import kombu

    # Plain Redis, over TCP, TLS or a Unix socket. Sentinel keeps send_task: its
    # failover is kombu's to handle, and nothing here tests it.
    if connection.transport_cls not in _PLAIN_REDIS:
        return None
    channel = connection.channel()  # connects, retrying at most once
    caught: list[tuple[str, dict[str, Any]]] = []

    def catch(queue: str, message: dict[str, Any], **_: Any) -> None:
        caught.append((queue, json.loads(json.dumps(message))))

    channel._put = catch  # this channel only: it sends nothing, it hands it here
    try:
        app.send_task(
            RUN_TASK,
            args=[_STAND_IN_UUID],
            task_id=_STAND_IN_UUID,
            producer=kombu.Producer(channel, auto_declare=False),
        )
    finally:
        del channel._put
    if len(caught) != 1:
        return None
    queue, message = caught[0]
    if message["properties"]["delivery_info"]["exchange"] != "" or (
        channel._expires and queue in channel._expires
    ):
        return None
    key = channel._q_for_pri(queue, channel._get_message_priority(message))
    if key != queue:
        return None
    body = base64.b64decode(message["body"]).decode("utf-8")
    message["properties"]["delivery_tag"] = _STAND_IN_TAG
    message["body"] = _STAND_IN_BODY
    return WakeUpPublisher(
        key=key,
        envelope=json.dumps(message),
        body=body,
        client=channel.Client(connection_pool=channel.pool),
        connection=connection,
        channel=channel,
    )
