"""A Host header that Django refuses, on the wire through gunicorn: a JSON 400.

Django raises DisallowedHost for a Host outside ALLOWED_HOSTS, or one that is no host
at all; its own answer is an HTML page, and with DEBUG on its debug page. Both the
production settings (DJANGO_ALLOWED_HOSTS set) and the development ones are served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RedisServer
from tests.live_servers import Gunicorn, production_env
from tests.raw_http import RawAnswer, exchange, request_head

pytestmark = pytest.mark.django_db(transaction=True)

# Behind the ingress: the production settings redirect plain HTTP elsewhere.
FROM_THE_INGRESS = {"X-Forwarded-Proto": "https"}
MALFORMED_HOSTS = ["\xff", "a b", "localhost:notaport", "exa mple.com:80", "[::1"]
PATHS = ["/healthz", "/readyz", "/api/tasks", "/api/openapi.json", "/nope", "/admin/"]


@pytest.fixture(scope="module")
def servers(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Gunicorn]]:
    """gunicorn under each settings module, DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost."""
    workdir: Path = tmp_path_factory.mktemp("bad-host")
    production = production_env(live_database_url, redis_server.url, workdir)
    development = {**production, "DJANGO_SETTINGS_MODULE": "scheduler_project.settings"}
    any_host = {k: v for k, v in development.items() if k != "DJANGO_ALLOWED_HOSTS"}
    started = {
        name: Gunicorn(env, workdir, workers=1)
        for name, env in (
            ("production", production),
            ("development", development),
            ("development, any host", any_host),
        )
    }
    try:
        yield {name: server.wait_ready() for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


def send(server: Gunicorn, path: str, host: str, method: str = "GET") -> RawAnswer:
    return exchange(server.port, request_head(method, path, FROM_THE_INGRESS, host))


def assert_json_bad_request(answer: RawAnswer) -> dict[str, object]:
    assert answer.status == 400, answer.body[:300]
    assert answer.headers["content-type"] == "application/json", answer.headers
    body = json.loads(answer.body)
    assert set(body) == {"error", "message"}
    assert body["error"] == "bad_request"
    assert isinstance(body["message"], str) and body["message"]
    assert len(body["message"]) < 300
    return body


@pytest.mark.parametrize("settings_name", ["production", "development"])
@pytest.mark.parametrize("path", PATHS)
def test_a_host_outside_allowed_hosts_is_a_json_400(
    servers: dict[str, Gunicorn], settings_name: str, path: str
) -> None:
    answer = send(servers[settings_name], path, "evil.example")
    body = assert_json_bad_request(answer)
    assert "evil.example" in str(body["message"])


@pytest.mark.parametrize(
    "settings_name", ["production", "development", "development, any host"]
)
@pytest.mark.parametrize("host", MALFORMED_HOSTS)
@pytest.mark.parametrize("path", PATHS)
def test_a_malformed_host_is_a_json_400(
    servers: dict[str, Gunicorn], settings_name: str, host: str, path: str
) -> None:
    assert_json_bad_request(send(servers[settings_name], path, host))


def test_a_very_long_host_is_named_in_the_error_not_sent_back_whole(
    servers: dict[str, Gunicorn],
) -> None:
    answer = send(servers["production"], "/healthz", "h" * 4000 + ".example")
    assert_json_bad_request(answer)


@pytest.mark.parametrize("settings_name", ["production", "development"])
def test_a_head_with_a_bad_host_is_a_400_without_a_body(
    servers: dict[str, Gunicorn], settings_name: str
) -> None:
    answer = send(servers[settings_name], "/healthz", "evil.example", method="HEAD")
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.body == b""


@pytest.mark.parametrize(
    "settings_name", ["production", "development", "development, any host"]
)
def test_an_allowed_host_is_still_answered(
    servers: dict[str, Gunicorn], settings_name: str
) -> None:
    for host in ("127.0.0.1", "localhost:8000"):
        answer = send(servers[settings_name], "/healthz", host)
        assert answer.status == 200, answer.body[:300]
        assert json.loads(answer.body) == {"status": "ok"}
