"""The admin in headless Chromium, against a running web server and a real worker.

An operator logs in, watches tasks appear and finish, closes the scheduler from its
page (new submissions are then refused with 503 over HTTP) and reopens it. With
UPDATE_SCREENSHOTS=1 the screenshots go to docs/screenshots/, which the README shows;
otherwise to the test's own folder.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), driven by
the Python ``playwright`` package: ``playwright install`` and its downloads are never
needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, sync_playwright

from tasks_app.scheduler import get_scheduler
from tests.harness import ROOT, Cluster, free_port, task_request, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a browser's password"


def post_task(base: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{base}/api/tasks",
        data=body,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def web(cluster: Cluster) -> Iterator[str]:
    """``manage.py runserver`` on the test database; --insecure serves the admin's CSS."""
    port = free_port()
    log = (cluster.workdir / "web.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runserver",
            "--noreload",
            "--insecure",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env=cluster.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, 60, message="runserver to answer")
        yield base
    finally:
        process.terminate()
        process.wait(15)
        log.close()


@pytest.fixture
def operator(transactional_db: None) -> User:
    return User.objects.create_superuser("operator", "operator@example.com", PASSWORD)


@pytest.fixture
def browser(operator: User) -> Iterator[Browser]:
    """Headless Chromium. Playwright runs an event loop in this thread, where Django
    refuses database calls: so the test body talks to the stack over HTTP only."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = (
        ROOT / "docs" / "screenshots"
        if os.environ.get("UPDATE_SCREENSHOTS") == "1"
        else tmp_path
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#scheduler-module")


def figure(page: Page, name: str) -> str:
    return page.inner_text(f"#figure-{name}").strip()


def reload_until(
    page: Page, check: Callable[[], bool], timeout: float, why: str
) -> None:
    def reloaded() -> bool:
        page.reload()
        return check()

    wait_until(reloaded, timeout, interval=0.5, message=why)


def test_an_operator_watches_tasks_finish_then_closes_and_reopens(
    cluster: Cluster, web: str, browser: Browser, shots: Path
) -> None:
    get_scheduler.cache_clear()
    cluster.start_worker(concurrency=2)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    log_in(page, web)
    page.goto(f"{web}/admin/tasks_app/taskrecord/")
    page.click("#toggle-nav-sidebar")  # room for every column; the admin remembers it

    uuids = []
    for i in range(6):
        spec: dict[str, object] = {"id": f"browser-{i}", "sleep": 2}
        if i == 5:
            spec["fail"] = "the input is not an image"
        status, body = post_task(web, task_request(**spec))
        assert status == 201, body
        uuids.append(str(body["uuid"]))

    page.goto(f"{web}/admin/scheduler/")
    assert page.inner_text("[data-state]") == "accepting"
    reload_until(
        page,
        lambda: figure(page, "processing") == "2",
        20,
        "two tasks processing on the scheduler page",
    )
    assert page.locator("#slot-holders tbody tr").count() == 2
    assert "w1@" in page.inner_text("#slot-holders")
    page.screenshot(path=str(shots / "scheduler-page.png"), full_page=True)

    page.goto(f"{web}/admin/tasks_app/taskrecord/")
    for uuid in uuids:
        assert page.locator(f"text={uuid}").count() == 1
    # The last two tasks end within moments of each other: wait for both outcomes.
    reload_until(
        page,
        lambda: (
            page.locator("td.field-status", has_text="done").count() == 5
            and page.locator("td.field-status", has_text="error").count() == 1
        ),
        40,
        f"five tasks done and one in error in the task list\n{cluster.logs()}",
    )
    page.screenshot(path=str(shots / "task-list.png"), full_page=True)

    page.goto(f"{web}/admin/tasks_app/taskrecord/{uuids[5]}/change/")
    assert "the input is not an image" in page.content()
    assert page.locator("#retry-task").count() == 1
    page.screenshot(path=str(shots / "task-in-error.png"), full_page=True)

    page.goto(f"{web}/admin/scheduler/")
    assert "the input is not an image" in page.inner_text("#recent-errors")
    page.click("#close-scheduler")
    page.click("#confirm-close")
    page.wait_for_selector("[data-state=drained]")
    status, body = post_task(web, task_request(id="while closed"))
    assert (status, body["error"]) == (503, "closed")
    page.screenshot(path=str(shots / "scheduler-closed.png"), full_page=True)

    page.click("#reopen-scheduler")
    page.click("#confirm-open")
    page.wait_for_selector("[data-state=accepting]")
    status, body = post_task(web, task_request(id="after reopening"))
    assert status == 201, body
