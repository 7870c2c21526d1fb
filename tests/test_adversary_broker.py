"""A broker that stops answering without closing its connections.

A frozen or overloaded Redis, a failover behind a load balancer, a network path that
drops packets: TCP stays up and nothing comes back. The database is the source of
truth and the reconciler publishes what was not sent, so an admission has no reason to
wait for the broker: the client must get its answer.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tasks_app.models import TaskRecord
from tests.harness import Cluster, RedisServer, WebServer, task_request

pytestmark = pytest.mark.django_db(transaction=True)

ANSWER_WITHIN_SECONDS = 10.0


@contextmanager
def frozen(redis_server: RedisServer) -> Iterator[None]:
    """The session's redis-server stopped with SIGSTOP; resumed whatever happens."""
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis_server.process.send_signal(signal.SIGCONT)


def post(web: WebServer, body: bytes, timeout: float) -> tuple[int, float]:
    """The status of ``POST /api/tasks`` (0 for no answer in time) and how long it took."""
    started = time.monotonic()
    request = urllib.request.Request(web.url + "/api/tasks", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started
    except TimeoutError:
        return 0, time.monotonic() - started


def test_submission_is_answered_while_the_broker_hangs(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    web = WebServer(cluster.env, cluster.workdir).start()
    try:
        # Each gunicorn process opens its broker connection before the freeze.
        for i in range(6):
            assert post(web, task_request(id=f"warm {i}"), 30)[0] == 201
        with frozen(redis_server):
            status, took = post(
                web, task_request(id="while frozen"), ANSWER_WITHIN_SECONDS + 20
            )
        assert TaskRecord.objects.count() == 7, "the task was not admitted"
        assert status == 201 and took < ANSWER_WITHIN_SECONDS, (
            f"answer {status or 'none'} after {took:.1f} s"
        )
    finally:
        web.stop()
