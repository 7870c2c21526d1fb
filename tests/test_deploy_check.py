"""The production settings: ``check --deploy`` clean, secrets required, HTTPS but probes.

Each runs in a process of its own with
``DJANGO_SETTINGS_MODULE=scheduler_project.settings.production``, as a deployment does.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, RedisServer
from tests.live_servers import Gunicorn, production_env


def production(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """A production environment that needs no server; ``None`` removes a variable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCHEDULER_", "CELERY_", "DJANGO_", "DATABASE_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="scheduler_project.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="scheduler.example.com,10.0.0.7",
        SCHEDULER_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(ROOT),
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_production_settings(tmp_path: Path) -> None:
    checked = manage(production(tmp_path), "check", "--deploy", "--fail-level", "DEBUG")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Nothing silenced, and no warning at all.
    assert "System check identified no issues (0 silenced)." in checked.stdout


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"])
@pytest.mark.parametrize("value", [None, "", "  "])
def test_production_refuses_to_start_without_its_secret_or_hosts(
    tmp_path: Path, missing: str, value: str | None
) -> None:
    checked = manage(production(tmp_path, **{missing: value}), "check")

    assert checked.returncode != 0
    assert f"{missing} is required" in checked.stderr


def test_production_settings_are_the_safe_ones(tmp_path: Path) -> None:
    script = """
import json
import django
django.setup()
from django.conf import settings
from scheduler_project.celery import app
print(json.dumps({
    "debug": settings.DEBUG,
    "auth": settings.SCHEDULER_AUTH_REQUIRED,
    "secure_cookies": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE],
    "hsts": settings.SECURE_HSTS_SECONDS,
    "redirect": settings.SECURE_SSL_REDIRECT,
    "proxy_header": settings.SECURE_PROXY_SSL_HEADER,
    "accept_content": list(app.conf.accept_content),
    "result_accept_content": app.conf.result_accept_content,
    "serializers": [app.conf.task_serializer, app.conf.result_serializer],
}))
"""
    env = production(tmp_path)
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.splitlines()[-1])

    assert seen["debug"] is False
    assert seen["auth"] is True
    assert seen["secure_cookies"] == [True, True]
    assert seen["hsts"] >= 365 * 24 * 3600
    assert seen["redirect"] is True
    assert seen["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    # Celery takes JSON only: no pickle from whoever can write to the broker.
    assert seen["accept_content"] == ["json"]
    assert seen["result_accept_content"] in (None, ["json"])
    assert seen["serializers"] == ["json", "json"]


def test_no_secret_is_committed_in_the_settings_or_the_image() -> None:
    production_settings = (
        ROOT / "scheduler_project/settings/production.py"
    ).read_text()
    assert "SECRET_KEY = _required(" in production_settings
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    assert "ENV DJANGO_SECRET_KEY" not in dockerfile
    for line in dockerfile.splitlines():
        # A build step may use a throwaway key inline; it never becomes an ENV.
        if "DJANGO_SECRET_KEY=" in line:
            assert line.lstrip().startswith("RUN "), line


# --- the web process, served by gunicorn --------------------------------------------------


@pytest.fixture(scope="module")
def web(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    workdir = tmp_path_factory.mktemp("web-production")
    env = production_env(live_database_url, redis_server.url, workdir)
    # The pod's own address, as the Kubernetes manifests append it for the probes.
    env["DJANGO_ALLOWED_HOSTS"] += ",10.0.0.7"
    server = Gunicorn(env, workdir, workers=1)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def get(
    server: Gunicorn, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", path, headers={"Host": "localhost", **(headers or {})})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.django_db(transaction=True)
def test_plain_http_is_redirected_to_https_but_the_probes_are_not(
    web: Gunicorn,
) -> None:
    redirected = get(web, "/api/tasks")
    assert redirected.status == 301
    assert redirected.getheader("Location") == "https://localhost/api/tasks"

    for probe in ("/healthz", "/readyz"):
        answer = get(web, probe, {"Host": "10.0.0.7:8000"})
        assert answer.status == 200, probe


@pytest.mark.django_db(transaction=True)
def test_behind_the_ingress_the_api_wants_a_token_and_sends_hsts(web: Gunicorn) -> None:
    answer = get(web, "/api/tasks", {"X-Forwarded-Proto": "https"})

    assert answer.status == 401
    assert answer.getheader("WWW-Authenticate") == "Bearer"
    hsts = answer.getheader("Strict-Transport-Security") or ""
    assert "max-age=31536000" in hsts and "includeSubDomains" in hsts


@pytest.mark.django_db(transaction=True)
def test_an_unknown_host_is_refused(web: Gunicorn) -> None:
    assert get(web, "/healthz", {"Host": "evil.example.org"}).status == 400
