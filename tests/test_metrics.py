"""``/metrics`` and the worker's metrics port, scraped before and after a batch.

The batch runs through real processes: gunicorn with two workers recycled every few
requests (so counts come from several processes, some of them exited) and a Celery
worker whose pool processes count what they finish. Every counter must move by exactly
the batch's numbers.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tasks_app.metrics.files import file_pid
from tasks_app.scheduler import get_scheduler
from tests.harness import ROOT, Cluster, free_port, task_request, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method=method,
        headers={"Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(url: str) -> Samples:
    status, body = http("GET", url)
    assert status == 200, body
    return parse(body.decode())


@contextmanager
def gunicorn(cluster: Cluster, metrics_dir: Path) -> Iterator[str]:
    """gunicorn with two workers, each replaced after four requests."""
    port = free_port()
    log = (cluster.workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "scheduler_project.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "2",
            "--max-requests",
            "4",
        ],
        cwd=ROOT,
        env={**cluster.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return http("GET", f"{base}/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 60, message="gunicorn to answer /healthz")
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_metrics_answers_prometheus_text_without_authentication(
    scheduler: object, client: Client
) -> None:
    get_scheduler.cache_clear()
    get_scheduler().add_task(task_request(id="queued"))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = parse(response.content.decode())
    assert value(samples, "scheduler_tasks_queued") == 1
    assert value(samples, "scheduler_tasks", status="queued") == 1
    assert value(samples, "scheduler_tasks", status="processing") == 0
    assert value(samples, "scheduler_slots") == 2
    assert value(samples, "scheduler_slots_in_use") == 0
    assert value(samples, "scheduler_closed") == 0
    assert value(samples, "scheduler_database_up") == 1
    assert value(samples, "scheduler_oldest_queued_age_seconds") >= 0
    for reason in ("closed", "queue_full", "too_large"):
        assert ("scheduler_refusals_total", frozenset({("reason", reason)})) in samples


def test_a_batch_moves_every_counter_by_exactly_its_numbers(
    cluster: Cluster, tmp_path: Path
) -> None:
    get_scheduler.cache_clear()
    worker_port = free_port()
    worker_metrics = tmp_path / "worker-metrics"
    web_metrics = tmp_path / "web-metrics"
    cluster.env["PROMETHEUS_MULTIPROC_DIR"] = str(worker_metrics)
    cluster.configure(scheduler_metrics_port=worker_port)
    cluster.start_worker(concurrency=2)
    cluster.env.pop("PROMETHEUS_MULTIPROC_DIR")
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"
    wait_until(lambda: scrape(worker_url), 20, message="the worker's metrics port")

    with gunicorn(cluster, web_metrics) as base:
        web_before, worker_before = scrape(f"{base}/metrics"), scrape(worker_url)

        requests = [task_request(id=i, batch="metrics") for i in range(9)]
        requests.append(task_request(id="bad", batch="metrics", fail="broken input"))
        uuids = []
        for request in requests:
            status, body = http("POST", f"{base}/api/tasks", request)
            assert status == 201, body
            uuids.append(body)
        for request in requests[:3]:
            assert http("POST", f"{base}/api/tasks", request)[0] == 200
        assert http("POST", f"{base}/api/scheduler/close")[0] == 200
        for extra in ("late-1", "late-2"):
            status, _ = http("POST", f"{base}/api/tasks", task_request(id=extra))
            assert status == 503
        assert http("POST", f"{base}/api/scheduler/open")[0] == 200

        scheduler = get_scheduler()
        wait_until(
            lambda: scheduler.state().queued + scheduler.state().processing == 0,
            60,
            message=f"the batch to finish\n{cluster.logs()}",
        )
        web_after, worker_after = scrape(f"{base}/metrics"), scrape(worker_url)

    def web_moved(name: str, **labels: str) -> float:
        return value(web_after, name, **labels) - value(web_before, name, **labels)

    def worker_moved(name: str, **labels: str) -> float:
        return value(worker_after, name, **labels) - value(
            worker_before, name, **labels
        )

    assert web_moved("scheduler_admissions_total", kind="new") == 10
    assert web_moved("scheduler_admissions_total", kind="retry") == 0
    assert web_moved("scheduler_dedup_hits_total") == 3
    assert web_moved("scheduler_refusals_total", reason="closed") == 2
    assert web_moved("scheduler_refusals_total", reason="queue_full") == 0
    assert web_moved("scheduler_refusals_total", reason="too_large") == 0
    assert worker_moved("scheduler_tasks_finished_total", status="done") == 9
    assert worker_moved("scheduler_tasks_finished_total", status="error") == 1
    assert worker_moved("scheduler_processing_seconds_count", status="done") == 9
    assert worker_moved("scheduler_processing_seconds_count", status="error") == 1
    assert worker_moved("scheduler_lease_expiries_total", outcome="queued") == 0
    assert value(web_after, "scheduler_tasks_queued") == 0
    assert value(web_after, "scheduler_slots_in_use") == 0

    # The counts came from several web processes, some of which have exited since.
    web_pids = {file_pid(path) for path in web_metrics.glob("counter_*.db")}
    assert len(web_pids) >= 3, web_pids
    assert any(pid is not None and not psutil.pid_exists(pid) for pid in web_pids)
    pool_pids = {file_pid(path) for path in worker_metrics.glob("counter_*.db")}
    assert set(cluster.workers[0].children()) & pool_pids


def test_a_lease_expiry_is_counted_by_the_keeper_that_recovers_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A worker killed mid-task: the surviving worker's keeper counts the expiry."""
    get_scheduler.cache_clear()
    cluster.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "doomed")
    doomed = cluster.start_worker(concurrency=1, name="doomed")
    uuid = get_scheduler().add_task(task_request(id="long", sleep=30))
    wait_until(lambda: get_scheduler().get_task(uuid).status == "processing", 20)

    port = free_port()
    cluster.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "survivor")
    cluster.configure(scheduler_metrics_port=port)
    cluster.start_worker(concurrency=1, name="survivor")
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: scrape(url), 20, message="the survivor's metrics port")
    before = scrape(url)
    doomed.kill()
    wait_until(
        lambda: (
            value(scrape(url), "scheduler_lease_expiries_total", outcome="queued")
            > value(before, "scheduler_lease_expiries_total", outcome="queued")
        ),
        30,
        message=f"the expiry to be counted\n{cluster.logs()}",
    )
    after = scrape(url)
    for name, labels in (
        ("scheduler_lease_expiries_total", {"outcome": "queued"}),
        ("scheduler_recoveries_total", {"action": "requeued"}),
    ):
        assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_a_request_refused_before_admission_is_counted_as_too_large(
    scheduler: object, client: Client, settings: Any
) -> None:
    settings.SCHEDULER_MAX_REQUEST_BYTES = 8
    get_scheduler.cache_clear()
    before = parse(client.get("/metrics").content.decode())
    response = client.post(
        "/api/tasks", data=b"nine bytes", content_type="application/octet-stream"
    )
    assert response.status_code == 413
    after = parse(client.get("/metrics").content.decode())
    for reason, moved in (("too_large", 1), ("closed", 0), ("queue_full", 0)):
        assert (
            value(after, "scheduler_refusals_total", reason=reason)
            - value(before, "scheduler_refusals_total", reason=reason)
            == moved
        )
    get_scheduler.cache_clear()
