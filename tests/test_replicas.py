"""Two web replicas share one closed state: close on one, refused on the other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasks_app.models import TaskRecord
from tests.harness import Cluster, WebServer, task_request, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def replicas(cluster: Cluster) -> Iterator[tuple[WebServer, WebServer]]:
    first = WebServer(cluster.env, cluster.workdir, "web-a").start()
    second = WebServer(cluster.env, cluster.workdir, "web-b").start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_close_through_one_replica_holds_on_the_other_and_after_its_restart(
    cluster: Cluster, replicas: tuple[WebServer, WebServer]
) -> None:
    first, second = replicas
    queued = []
    for i in range(10):
        status, body = first.request(
            "POST", "/api/tasks", task_request(id=i, sleep=0.2)
        )
        assert status == 201, body
        queued.append(body["uuid"])

    status, body = first.request("POST", "/api/scheduler/close")
    assert status == 200 and body["closed"] is True and body["state"] == "draining"

    def refused_everywhere() -> None:
        for replica in (first, second):
            status, body = replica.request("POST", "/api/tasks", task_request(id="new"))
            assert (status, body["error"]) == (503, "closed")
            status, body = replica.request(
                "POST", "/api/tasks", task_request(id=0, sleep=0.2)
            )
            assert (status, body["error"]) == (503, "closed"), (
                "duplicates are refused too"
            )
        assert TaskRecord.objects.count() == 10

    refused_everywhere()
    second.stop()
    second.start()
    refused_everywhere()

    cluster.start_worker(concurrency=2)
    wait_until(
        lambda: second.request("GET", "/api/scheduler")[1].get("state") == "drained",
        60,
        message="drained",
    )
    assert set(TaskRecord.objects.values_list("status", flat=True)) == {"done"}
    assert len(cluster.call_log.calls()) == 10

    status, body = second.request("POST", "/api/scheduler/open")
    assert status == 200 and body["state"] == "accepting"
    assert first.request("POST", "/api/tasks", task_request(id="reopened"))[0] == 201
    assert second.request("POST", "/api/scheduler/close")[0] == 200
    assert first.request("POST", "/api/scheduler/open")[1]["closed"] is False
    assert second.request("POST", "/api/tasks", task_request(id="again"))[0] == 201
