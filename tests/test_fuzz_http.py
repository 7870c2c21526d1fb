"""Schemathesis against the OpenAPI schema that a live gunicorn serves, production settings.

Every operation of ``/api/openapi.json`` gets generated requests, valid and invalid,
with a token that holds every scope: no answer is a 5xx (but the documented 503 of a
closed scheduler), each answer conforms to the schema, and every task the API accepted
is still readable afterwards with the hash of what was sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tasks_app.tokens import Scope, create_token
from tests.harness import RedisServer
from tests.live_servers import Gunicorn, production_env

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def web(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    workdir: Path = tmp_path_factory.mktemp("schemathesis")
    env = production_env(
        live_database_url,
        redis_server.url,
        workdir,
        max_request_bytes=64 * 1024,
        rate_limit="off",
    )
    server = Gunicorn(env, workdir, workers=2)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx, except the contract's 503 ``closed`` after a generated close."""
    if response.status_code < 500:
        return
    body = (
        response.json()
        if "json" in response.headers.get("Content-Type", [""])[0]
        else {}
    )
    closed = response.status_code == 503 and body.get("error") == "closed"
    assert closed, f"{case.method} {case.formatted_path}: {response.status_code}"


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.django_db(transaction=True)
def test_generated_requests_get_no_5xx_and_lose_no_accepted_task(web: Gunicorn) -> None:
    token = create_token(tuple(Scope), name="schemathesis")[1]
    # Behind the ingress: the production settings redirect plain HTTP.
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    schema = schemathesis.openapi.from_url(
        f"{web.url}/api/openapi.json", headers=headers
    )
    accepted: dict[str, bytes] = {}
    seen: set[tuple[str, int]] = set()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case: Any) -> None:
                response = case.call(base_url=web.url, headers=headers, timeout=30)
                seen.add((f"{case.method.upper()} {case.path}", response.status_code))
                case.validate_response(response, checks=CHECKS, headers=headers)
                submitted = case.path == "/api/tasks" and case.method.upper() == "POST"
                if submitted and response.status_code in (200, 201):
                    accepted[response.json()["uuid"]] = _sent_bytes(response)
                if case.path == "/api/scheduler/close" and response.status_code == 200:
                    reopen = requests.post(
                        f"{web.url}/api/scheduler/open", headers=headers, timeout=10
                    )
                    assert reopen.status_code == 200

            exercise()

    # The generated requests reached the handlers, not only the validation.
    assert {("POST /api/tasks", 201), ("GET /api/tasks", 200)} <= seen, sorted(seen)
    assert {status for _, status in seen} >= {200, 201, 400, 401}, sorted(seen)
    for uuid, sent in accepted.items():
        answer = requests.get(
            f"{web.url}/api/tasks/{uuid}", headers=headers, timeout=10
        )
        assert answer.status_code == 200, (uuid, answer.text)
        assert answer.json()["hash"] == hashlib.sha256(sent).hexdigest()


def _sent_bytes(response: Any) -> bytes:
    """The body as it went over the wire."""
    body = response.request.body
    if body is None:
        return b""
    return body if isinstance(body, bytes) else str(body).encode()
