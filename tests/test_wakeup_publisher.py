"""Wake-ups pushed as Celery's own message text: the same message, on the right broker."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tasks_app import dispatch, wakeup_publisher
from tasks_app.dispatch import RUN_TASK
from tests.harness import RedisServer, running_redis
from tests.test_logging import recording


def queued_messages(server: RedisServer) -> list[dict[str, Any]]:
    """The messages in Celery's default queue, oldest first, bodies decoded."""
    raw = server.command("--raw", "LRANGE", "celery", "0", "-1").decode()
    messages = [json.loads(line) for line in raw.splitlines() if line]
    for message in messages:
        message["body"] = json.loads(base64.b64decode(message["body"]))
    return list(reversed(messages))  # LPUSH puts the newest first


def use_broker(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point this process's Celery app at ``url`` until the test ends."""
    from scheduler_project.celery import app

    # Celery reads the variable before its own setting.
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setattr(app.conf, "broker_url", url)


def test_a_wake_up_is_the_message_send_task_sends(broker: RedisServer) -> None:
    from scheduler_project.celery import app

    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    assert wakeup_publisher.for_this_process() is not None
    assert dispatch.publish([ours]) == 1
    app.send_task(RUN_TASK, args=[theirs], task_id=theirs)

    fast, stock = queued_messages(broker)
    assert fast["headers"]["id"] == ours
    assert fast["body"][0] == [ours]
    fast_tag = fast["properties"].pop("delivery_tag")
    stock_tag = stock["properties"].pop("delivery_tag")
    assert fast_tag != stock_tag
    uuid.UUID(fast_tag)
    expected = json.loads(json.dumps(stock).replace(theirs, ours))
    assert fast == expected


def test_each_wake_up_has_its_own_delivery_tag(broker: RedisServer) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert dispatch.publish([first, second]) == 2
    messages = queued_messages(broker)
    assert [m["headers"]["id"] for m in messages] == [first, second]
    tags = {m["properties"]["delivery_tag"] for m in messages}
    assert len(tags) == 2


def test_a_task_id_is_written_into_the_message_as_json(broker: RedisServer) -> None:
    odd = 'quote " backslash \\ end'
    assert dispatch.publish([odd]) == 1
    (message,) = queued_messages(broker)
    assert message["headers"]["id"] == odd
    assert message["body"][0] == [odd]


def test_a_broker_other_than_redis_goes_through_send_task(
    broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in ("memory://", "sentinel://127.0.0.1:1"):
        with monkeypatch.context() as patch:
            use_broker(patch, url)
            assert wakeup_publisher.for_this_process() is None
    assert wakeup_publisher.for_this_process() is not None


def test_a_new_broker_url_gets_its_own_publisher(
    broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = wakeup_publisher.for_this_process()
    with running_redis() as other:
        with monkeypatch.context() as patch:
            use_broker(patch, other.url)
            task = str(uuid.uuid4())
            assert dispatch.publish([task]) == 1
            assert wakeup_publisher.for_this_process() is not first
        assert [m["headers"]["id"] for m in queued_messages(other)] == [task]
    assert queued_messages(broker) == []


def test_a_forked_child_builds_its_own_message(broker: RedisServer) -> None:
    parent = wakeup_publisher.for_this_process()
    assert parent is not None
    assert f"gen{os.getpid()}@" in parent.envelope
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        try:
            own = wakeup_publisher.for_this_process()
            fine = (
                own is not None
                and own is not parent
                and f"gen{os.getpid()}@" in own.envelope
                and dispatch.publish([f"from-{os.getpid()}"]) == 1
            )
            os.write(writer, b"ok" if fine else b"no")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 2)
    os.waitpid(child, 0)
    assert answer == b"ok"
    assert [m["headers"]["id"] for m in queued_messages(broker)] == [f"from-{child}"]


def test_a_broker_that_is_down_fails_the_publish_and_the_next_one_goes_out(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_redis() as server:
        with monkeypatch.context() as patch:
            use_broker(patch, server.url)
            server.stop()
            started = time.monotonic()
            with recording() as log:
                assert dispatch.publish(["while-down"]) == 0
            assert time.monotonic() - started < 10
            assert [r.event for r in log.records] == ["publish_failed"]  # type: ignore[attr-defined]
            server.start()
            assert dispatch.publish(["after-restart"]) == 1
        assert [m["headers"]["id"] for m in queued_messages(server)] == [
            "after-restart"
        ]


def test_threads_publishing_at_once_each_send_a_whole_message(
    broker: RedisServer,
) -> None:
    """Web and gRPC processes publish from many threads through one client."""
    tasks = [[str(uuid.uuid4()) for _ in range(50)] for _ in range(8)]
    with ThreadPoolExecutor(len(tasks)) as pool:
        sent = list(pool.map(dispatch.publish, tasks))
    assert sent == [50] * 8
    messages = queued_messages(broker)
    assert sorted(m["headers"]["id"] for m in messages) == sorted(
        task for batch in tasks for task in batch
    )
    assert all(m["body"][0] == [m["headers"]["id"]] for m in messages)
    assert len({m["properties"]["delivery_tag"] for m in messages}) == 400


def test_a_frozen_broker_fails_the_publish_within_the_socket_timeout(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that stops answering holds a submission 3 s, the transport's timeout."""
    from scheduler_project.celery import app

    # What the settings give a Redis broker; this process imported them before the
    # session's Redis existed, with the filesystem broker's options.
    options = app.conf.broker_transport_options
    app.conf.broker_transport_options = {
        "socket_timeout": 3,
        "socket_connect_timeout": 3,
    }
    try:
        with running_redis() as server, monkeypatch.context() as patch:
            use_broker(patch, server.url)
            assert dispatch.publish(["before"]) == 1
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                assert dispatch.publish(["while-frozen"]) == 0
                waited = time.monotonic() - started
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert dispatch.publish(["after"]) == 1
            ids = [m["headers"]["id"] for m in queued_messages(server)]
    finally:
        app.conf.broker_transport_options = options
    assert 2.5 < waited < 5
    # The frozen server may have taken the LPUSH it never answered: a wake-up is a hint,
    # and one sent twice runs nothing more.
    assert ids in (["before", "after"], ["before", "while-frozen", "after"])
