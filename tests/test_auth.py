"""API tokens and scopes over HTTP and gRPC, as a client and an operator see them.

HTTP goes through Django's test client with authentication switched on; gRPC through
``manage.py rungrpc`` with the production settings, on the test database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from grpc_health.v1 import health_pb2

from tasks_app import health
from tasks_app.grpc_api.generated import scheduler_pb2 as pb
from tasks_app.models import ApiToken, TaskRecord
from tasks_app.scheduler import get_scheduler
from tasks_app.tokens import Scope, create_token, digest_of
from tests.harness import RedisServer
from tests.live_servers import Rungrpc, production_env

NO_SUCH_TASK = "0b7e6f55-9c3b-4c39-9d43-2a0f1d1b7c11"

# Every HTTP route that needs a token: (method, path, scope).
HTTP_ROUTES = [
    ("post", "/api/tasks", Scope.SUBMIT),
    ("get", "/api/tasks", Scope.READ),
    ("get", f"/api/tasks/{NO_SUCH_TASK}", Scope.READ),
    ("get", f"/api/tasks/{NO_SUCH_TASK}/result", Scope.READ),
    ("post", f"/api/tasks/{NO_SUCH_TASK}/retry", Scope.OPERATE),
    ("get", "/api/scheduler", Scope.READ),
    ("post", "/api/scheduler/close", Scope.OPERATE),
    ("post", "/api/scheduler/open", Scope.OPERATE),
]


@pytest.fixture(autouse=True)
def fresh_scheduler() -> Iterator[None]:
    get_scheduler.cache_clear()
    health.reset_shutdown()
    yield
    get_scheduler.cache_clear()


@pytest.fixture
def auth_on(settings: Any) -> None:
    settings.SCHEDULER_AUTH_REQUIRED = True
    settings.SCHEDULER_RATE_LIMIT = "off"


def token_with(*scopes: Scope) -> str:
    return create_token(scopes, name="test")[1]


def call(client: Client, method: str, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "post":
        return client.post(
            path,
            data=b"a request",
            content_type="application/octet-stream",
            headers=headers,
        )
    return client.get(path, headers=headers)


def assert_error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    return str(body["message"])


# --- tokens -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_token_prints_the_token_once_and_stores_only_its_sha256() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_token",
        "--scopes",
        "submit,read",
        "--name",
        "ci",
        stdout=out,
        stderr=err,
    )

    token = out.getvalue().strip()
    assert re.fullmatch(r"sch_[A-Za-z0-9_-]{43}", token)
    assert "shown only this once" in err.getvalue()
    row = ApiToken.objects.get()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert row.scopes == "submit,read"
    assert row.name == "ci"
    stored = " ".join(str(value) for value in vars(row).values())
    assert token not in stored
    assert token[len(row.prefix) :] not in stored


@pytest.mark.django_db
@pytest.mark.parametrize("scopes", ["", "submit,admin", " , "])
def test_create_token_refuses_unknown_or_missing_scopes(scopes: str) -> None:
    with pytest.raises(CommandError, match="scope"):
        call_command("create_token", "--scopes", scopes, stdout=io.StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_create_token_with_an_expiry_stores_it_and_says_when() -> None:
    err = io.StringIO()
    before = timezone.now()
    call_command(
        "create_token",
        "--scopes",
        "read",
        "--expires-in-days",
        "30",
        stdout=io.StringIO(),
        stderr=err,
    )

    row = ApiToken.objects.get()
    assert row.expires_at is not None
    assert (
        before + dt.timedelta(days=30)
        <= row.expires_at
        <= timezone.now() + dt.timedelta(days=30)
    )
    assert (
        f"expires at {row.expires_at.isoformat(timespec='seconds')}" in err.getvalue()
    )


@pytest.mark.django_db
@pytest.mark.parametrize("days", ["0", "-1", "nan", "inf", "36501", "soon"])
def test_create_token_refuses_an_expiry_that_is_not_a_number_of_days(
    days: str,
) -> None:
    with pytest.raises(CommandError, match="expires-in-days"):
        call_command(
            "create_token",
            "--scopes",
            "read",
            "--expires-in-days",
            days,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_two_tokens_are_never_the_same() -> None:
    first, second = token_with(Scope.READ), token_with(Scope.READ)
    assert first != second
    assert ApiToken.objects.filter(digest=digest_of(first)).count() == 1


# --- HTTP -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "scope"), HTTP_ROUTES)
def test_each_http_route_needs_a_token(
    client: Client, auth_on: None, method: str, path: str, scope: Scope
) -> None:
    response = call(client, method, path)

    message = assert_error(response, 401, "unauthenticated")
    assert "Authorization: Bearer" in message
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "scope"), HTTP_ROUTES)
def test_each_http_route_refuses_a_token_without_its_scope_with_403(
    client: Client, auth_on: None, method: str, path: str, scope: Scope
) -> None:
    others = [other for other in Scope if other != scope]

    response = call(client, method, path, token_with(*others))

    message = assert_error(response, 403, "forbidden")
    assert repr(scope.value) in message


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "scope"), HTTP_ROUTES)
def test_each_http_route_serves_a_token_with_its_scope(
    client: Client, auth_on: None, method: str, path: str, scope: Scope
) -> None:
    response = call(client, method, path, token_with(scope))

    assert response.status_code not in (401, 403), response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        "Bearer sch_not-a-token-we-issued",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "sch_without_a_scheme",
        "Bearer " + "x" * 5000,
        "Bearer \u00e9\u00e8",
    ],
)
def test_unknown_or_malformed_credentials_are_401(
    client: Client, auth_on: None, header: str
) -> None:
    response = client.get("/api/tasks", headers={"Authorization": header})
    assert_error(response, 401, "unauthenticated")


@pytest.mark.django_db
def test_a_revoked_token_is_401_from_the_next_call(
    client: Client, auth_on: None
) -> None:
    token = token_with(Scope.READ)
    assert call(client, "get", "/api/tasks", token).status_code == 200

    from tasks_app.tokens import revoke

    assert revoke(ApiToken.objects.all()) == 1
    assert_error(call(client, "get", "/api/tasks", token), 401, "unauthenticated")


def token_expiring_in(seconds: float, *scopes: Scope) -> str:
    expires_at = timezone.now() + dt.timedelta(seconds=seconds)
    return create_token(scopes, name="expiring", expires_at=expires_at)[1]


@pytest.mark.django_db
def test_an_expired_token_is_401_and_says_when_it_expired(
    client: Client, auth_on: None
) -> None:
    live = token_expiring_in(3600, Scope.READ, Scope.SUBMIT)
    assert call(client, "get", "/api/tasks", live).status_code == 200

    expired = token_expiring_in(-1, Scope.READ, Scope.SUBMIT)
    row = ApiToken.objects.get(digest=digest_of(expired))
    assert row.expires_at is not None
    for method, path in (("get", "/api/tasks"), ("post", "/api/tasks")):
        message = assert_error(
            call(client, method, path, expired), 401, "unauthenticated"
        )
        assert "expired at" in message and row.prefix in message, message
        assert row.expires_at.isoformat(timespec="seconds") in message
    assert not TaskRecord.objects.exists()


@pytest.mark.django_db
def test_the_admin_creates_a_token_with_an_expiry(
    admin_client: Client, client: Client, auth_on: None
) -> None:
    response = admin_client.post(
        "/admin/tasks_app/apitoken/add/",
        {
            "name": "expired already",
            "scope_choices": ["read"],
            "expires_at_0": "2020-01-01",
            "expires_at_1": "00:00:00",
        },
    )

    assert response.status_code == 200, response.content
    match = re.search(rb'id="new-api-token">(sch_[A-Za-z0-9_-]+)<', response.content)
    assert match, response.content
    row = ApiToken.objects.get()
    assert row.expires_at == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    message = assert_error(
        call(client, "get", "/api/scheduler", match.group(1).decode()),
        401,
        "unauthenticated",
    )
    assert "expired at 2020-01-01T00:00:00+00:00" in message


@pytest.mark.django_db
def test_refused_submissions_store_nothing(client: Client, auth_on: None) -> None:
    assert_error(call(client, "post", "/api/tasks"), 401, "unauthenticated")
    assert_error(
        call(client, "post", "/api/tasks", token_with(Scope.READ, Scope.OPERATE)),
        403,
        "forbidden",
    )
    assert not TaskRecord.objects.exists()


@pytest.mark.django_db
def test_probes_and_the_schema_need_no_token(client: Client, auth_on: None) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    security = schema.json()["components"]["securitySchemes"]
    assert {scheme["scheme"] for scheme in security.values()} == {"bearer"}


@pytest.mark.django_db
def test_development_settings_need_no_token(client: Client) -> None:
    from django.conf import settings

    assert settings.SCHEDULER_AUTH_REQUIRED is False
    assert call(client, "post", "/api/tasks").status_code == 201
    assert call(client, "post", "/api/scheduler/close").status_code == 200


# --- the admin --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_tokens_admin_needs_a_staff_login(client: Client) -> None:
    response = client.get("/admin/tasks_app/apitoken/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_the_admin_creates_a_token_shows_it_once_and_revokes_it(
    admin_client: Client, client: Client, auth_on: None
) -> None:
    response = admin_client.post(
        "/admin/tasks_app/apitoken/add/",
        {"name": "from the admin", "scope_choices": ["read", "operate"]},
    )

    assert response.status_code == 200, response.content
    match = re.search(rb'id="new-api-token">(sch_[A-Za-z0-9_-]+)<', response.content)
    assert match, response.content
    token = match.group(1).decode()
    row = ApiToken.objects.get()
    assert row.digest == digest_of(token) and row.scopes == "read,operate"
    assert token not in admin_client.get("/admin/tasks_app/apitoken/").content.decode()
    page = admin_client.get(f"/admin/tasks_app/apitoken/{row.pk}/change/")
    assert token not in page.content.decode()
    assert call(client, "get", "/api/scheduler", token).status_code == 200

    admin_client.post(
        "/admin/tasks_app/apitoken/",
        {"action": "revoke", "_selected_action": [row.pk]},
    )
    assert_error(call(client, "get", "/api/scheduler", token), 401, "unauthenticated")


# --- gRPC -------------------------------------------------------------------------------

# Every RPC: (name, request, scope).
GRPC_CALLS = [
    ("AddTask", pb.AddTaskRequest(request=b"a request"), Scope.SUBMIT),
    ("GetTask", pb.GetTaskRequest(uuid=NO_SUCH_TASK), Scope.READ),
    ("FindTasks", pb.FindTasksRequest(limit=5), Scope.READ),
    ("State", pb.StateRequest(), Scope.READ),
    ("WaitDrained", pb.WaitDrainedRequest(timeout=0), Scope.READ),
    ("Retry", pb.RetryRequest(uuid=NO_SUCH_TASK), Scope.OPERATE),
    ("Open", pb.OpenRequest(), Scope.OPERATE),
    ("Close", pb.CloseRequest(), Scope.OPERATE),
]
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@pytest.fixture(scope="module")
def grpc_server(
    live_database_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rungrpc]:
    workdir = tmp_path_factory.mktemp("grpc-auth")
    env = production_env(live_database_url, redis_server.url, workdir, rate_limit="off")
    server = Rungrpc(env, workdir)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def grpc_call(
    server: Rungrpc, rpc: str, request: Any, token: str | None = None
) -> tuple[grpc.StatusCode, str, str]:
    """(code, details, error-code metadata) of one call; OK has empty details."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    try:
        getattr(server.stub, rpc)(request, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        trailing = dict(error.trailing_metadata() or ())
        return error.code(), error.details() or "", trailing.get("error-code", "")
    return grpc.StatusCode.OK, "", ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("rpc", "request_message", "scope"), GRPC_CALLS)
def test_each_rpc_needs_a_token(
    grpc_server: Rungrpc, rpc: str, request_message: Any, scope: Scope
) -> None:
    for token in (None, "sch_unknown"):
        code, details, error_code = grpc_call(grpc_server, rpc, request_message, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (token, details)
        assert error_code == "unauthenticated"


@pytest.mark.django_db(transaction=True)
def test_an_expired_token_is_unauthenticated_over_grpc(grpc_server: Rungrpc) -> None:
    expired = token_expiring_in(-1, *Scope)

    code, details, error_code = grpc_call(
        grpc_server, "AddTask", pb.AddTaskRequest(request=b"expired"), expired
    )

    assert code == grpc.StatusCode.UNAUTHENTICATED, details
    assert error_code == "unauthenticated"
    assert "expired at" in details
    assert not TaskRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("rpc", "request_message", "scope"), GRPC_CALLS)
def test_each_rpc_refuses_a_token_without_its_scope(
    grpc_server: Rungrpc, rpc: str, request_message: Any, scope: Scope
) -> None:
    token = token_with(*(other for other in Scope if other != scope))

    code, details, error_code = grpc_call(grpc_server, rpc, request_message, token)

    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert error_code == "forbidden"
    assert repr(scope.value) in details


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("rpc", "request_message", "scope"), GRPC_CALLS)
def test_each_rpc_serves_a_token_with_its_scope(
    grpc_server: Rungrpc, rpc: str, request_message: Any, scope: Scope
) -> None:
    code, details, _ = grpc_call(grpc_server, rpc, request_message, token_with(scope))

    assert code not in AUTH_CODES, details
    grpc_call(grpc_server, "Open", pb.OpenRequest(), token_with(Scope.OPERATE))


@pytest.mark.django_db(transaction=True)
def test_a_refused_add_task_stores_nothing(grpc_server: Rungrpc) -> None:
    request = pb.AddTaskRequest(request=b"never stored")
    grpc_call(grpc_server, "AddTask", request)
    grpc_call(grpc_server, "AddTask", request, token_with(Scope.READ))

    assert not TaskRecord.objects.exists()
    token = token_with(Scope.SUBMIT)
    assert grpc_call(grpc_server, "AddTask", request, token)[0] == grpc.StatusCode.OK
    assert TaskRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_health_and_reflection_need_no_token(grpc_server: Rungrpc) -> None:
    answer = grpc_server.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc_server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = reflection.ServerReflectionInfo(iter([request]), timeout=10)
    names = {service.name for service in reply.list_services_response.service}
    assert "scheduler.v1.Scheduler" in names


@pytest.mark.django_db(transaction=True)
def test_an_unauthenticated_caller_gets_nothing_decoded(grpc_server: Rungrpc) -> None:
    """Garbage bytes without a token are 401-like, not a complaint about the bytes."""
    add_raw = grpc_server.channel.unary_unary("/scheduler.v1.Scheduler/AddTask")
    with pytest.raises(grpc.RpcError) as caught:
        add_raw(b"\xff\xff\xff not protobuf", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    token = token_with(Scope.SUBMIT)
    with pytest.raises(grpc.RpcError) as caught:
        add_raw(
            b"\xff\xff\xff not protobuf",
            timeout=10,
            metadata=[("authorization", f"Bearer {token}")],
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "AddTaskRequest" in (caught.value.details() or "")


# --- gRPC over TLS ----------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path, bytes]:
    """A certificate for localhost and 127.0.0.1, made here: (cert, key, cert PEM)."""
    import datetime as dt
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "grpc.crt", directory / "grpc.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert_pem


@pytest.fixture
def start_grpc(
    live_database_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., Rungrpc]]:
    started: list[Rungrpc] = []

    def start(root_certificate: bytes | None = None, **settings: object) -> Rungrpc:
        env = production_env(live_database_url, redis_server.url, tmp_path, **settings)
        server = Rungrpc(env, tmp_path, root_certificate=root_certificate)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_grpc_serves_tls_with_a_configured_certificate(
    start_grpc: Callable[..., Rungrpc], tmp_path: Path
) -> None:
    cert_path, key_path, cert_pem = self_signed_certificate(tmp_path)
    server = start_grpc(
        root_certificate=cert_pem,
        grpc_tls_cert=cert_path,
        grpc_tls_key=key_path,
        rate_limit="off",
    ).wait_ready()

    token = token_with(Scope.SUBMIT, Scope.READ)
    metadata = [("authorization", f"Bearer {token}")]
    added = server.stub.AddTask(
        pb.AddTaskRequest(request=b"over TLS"), timeout=10, metadata=metadata
    )
    task = server.stub.GetTask(
        pb.GetTaskRequest(uuid=added.uuid), timeout=10, metadata=metadata
    )
    assert task.uuid == added.uuid
    assert "TLS" in server.log_tail()

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plaintext:
        health = health_pb2.HealthCheckRequest()
        from grpc_health.v1 import health_pb2_grpc

        with pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(plaintext).Check(health, timeout=3)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.django_db(transaction=True)
def test_grpc_refuses_to_start_with_half_a_tls_configuration(
    start_grpc: Callable[..., Rungrpc], tmp_path: Path
) -> None:
    cert_path, _, _ = self_signed_certificate(tmp_path)
    server = start_grpc(grpc_tls_cert=cert_path)

    assert server.process.wait(60) != 0
    assert "SCHEDULER_GRPC_TLS_KEY" in server.log_tail()
