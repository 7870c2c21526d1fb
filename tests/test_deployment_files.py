"""The deployment files hold what the contract and the failure model need.

Kubernetes manifests are validated against Kubernetes' own schemas (kubernetes-validate
bundles them, so this runs offline), the compose file is parsed and compared with the
contract's process table, gunicorn.conf.py is loaded as gunicorn loads it, and the
web process's SIGTERM hook and the worker probe are exercised as real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import psutil
import pytest
import yaml
from gunicorn.config import Config

from scheduler_project import run
from tests.harness import ROOT, free_port, wait_until
from tests.test_make_run import sqlite_environment

DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
# The oldest Kubernetes the manifests target (gRPC probes are GA from 1.27) and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.27", kubernetes_validate.utils.latest_version()]

# The contract's process table (shared/CONTRACT.md, "Commands"): how each is started.
CONTRACT_COMMANDS = {
    "migrate": ["python", "manage.py", "migrate"],
    "web": ["gunicorn", "scheduler_project.wsgi"],
    "worker": ["celery", "-A", "scheduler_project", "worker"],
    "grpc": ["python", "manage.py", "rungrpc"],
    "flower": ["celery", "-A", "scheduler_project", "flower"],
}
LONGEST_WAIT_SECONDS = 60


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def kubernetes_objects() -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] != "Kustomization"]


def find(kind: str, name: str) -> dict[str, Any]:
    for document in kubernetes_objects():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in {K8S}")


def pod_spec(component: str) -> dict[str, Any]:
    spec: dict[str, Any] = find("Deployment", f"scheduler-{component}")["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def main_container(component: str) -> dict[str, Any]:
    containers = pod_spec(component)["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def config_map() -> dict[str, str]:
    return find("ConfigMap", "scheduler-config")["data"]  # type: ignore[no-any-return]


def contract_command(argv: list[str]) -> str | None:
    """Which process of the contract's table ``argv`` starts, if any."""
    for process, command in CONTRACT_COMMANDS.items():
        if argv[: len(command)] == command:
            return process
    return None


# --- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    objects = kubernetes_objects()
    assert len(objects) >= 15
    for document in objects:
        # strict: an unknown field (a typo such as "livenesProbe") is an error too.
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validate_catches_a_misspelt_field() -> None:
    """The validation above is not vacuous: the bundled schemas reject a typo."""
    deployment = json.loads(json.dumps(find("Deployment", "scheduler-worker")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    (kustomization,) = [d for _, d in manifests() if d["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files
    images = {image["name"] for image in kustomization["images"]}
    for document in kubernetes_objects():
        template = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in [
            *template.get("initContainers", []),
            *template.get("containers", []),
        ]:
            assert container["image"] in images, container["name"]


def test_the_stack_has_every_kind_of_object_it_needs() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in kubernetes_objects()}
    for component in ("web", "grpc", "worker", "flower"):
        assert ("Deployment", f"scheduler-{component}") in kinds
    for component in ("web", "grpc", "flower"):
        assert ("Service", f"scheduler-{component}") in kinds
    for component in ("web", "grpc", "worker"):
        assert ("PodDisruptionBudget", f"scheduler-{component}") in kinds
    assert ("Job", "scheduler-migrate") in kinds
    assert ("ConfigMap", "scheduler-config") in kinds
    assert ("Secret", "scheduler-secrets") in kinds
    assert ("HorizontalPodAutoscaler", "scheduler-worker") in kinds


def test_containers_start_the_contract_commands_under_the_images_tini() -> None:
    """``args``, never ``command``: a command would replace the ENTRYPOINT, and with it
    tini, the PID 1 that passes SIGTERM to the main process alone."""
    expected = {
        "scheduler-web": "web",
        "scheduler-grpc": "grpc",
        "scheduler-worker": "worker",
        "scheduler-flower": "flower",
        "scheduler-migrate": "migrate",
    }
    for document in kubernetes_objects():
        if document["kind"] not in ("Deployment", "Job"):
            continue
        (container,) = document["spec"]["template"]["spec"]["containers"]
        assert "command" not in container, document["metadata"]["name"]
        assert contract_command(container["args"]) == expected.pop(
            document["metadata"]["name"]
        )
    assert expected == {}


def test_pods_run_as_a_non_root_user_on_a_read_only_filesystem() -> None:
    for document in kubernetes_objects():
        if document["kind"] not in ("Deployment", "Job"):
            continue
        spec = document["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_web_probes_use_healthz_and_readyz_with_an_allowed_host() -> None:
    container = main_container("web")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    allowed = config_map()["DJANGO_ALLOWED_HOSTS"].split(",")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        headers = container[probe]["httpGet"]["httpHeaders"]
        (host,) = [h["value"] for h in headers if h["name"] == "Host"]
        assert host in allowed, f"{probe} sends Host {host}, which Django refuses"


def test_web_accepts_its_pod_ip_for_the_metrics_scrape() -> None:
    env = main_container("web")["env"]
    names = [variable["name"] for variable in env]
    # The kubelet expands $(VAR) only over variables defined before this one.
    assert names.index("POD_IP") < names.index("DJANGO_ALLOWED_HOSTS")
    (hosts,) = [v["value"] for v in env if v["name"] == "DJANGO_ALLOWED_HOSTS"]
    assert hosts == "$(DJANGO_ALLOWED_HOSTS),$(POD_IP)"
    pod_ip = env[names.index("POD_IP")]["valueFrom"]["fieldRef"]["fieldPath"]
    assert pod_ip == "status.podIP"


def test_grpc_readiness_uses_the_standard_health_service_and_liveness_the_port() -> (
    None
):
    """Health follows the database and the broker: an outage must not restart pods."""
    container = main_container("grpc")
    port = int(config_map()["SCHEDULER_GRPC_PORT"])
    assert container["ports"] == [{"name": "grpc", "containerPort": port}]
    readiness = container["readinessProbe"]["grpc"]
    assert readiness == {"port": port, "service": "scheduler.v1.Scheduler"}
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["tcpSocket"]["port"] == "grpc"


def test_worker_probes_read_the_heartbeat_file_without_the_broker() -> None:
    container = main_container("worker")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:4] == ["python", "-m", "tasks_app.probes", "worker"]
        max_age = float(command[command.index("--max-age") + 1])
        # The keeper touches the file every SCHEDULER_RECONCILE_INTERVAL (1 s).
        assert 10 <= max_age <= 120
    heartbeat = config_map()["SCHEDULER_WORKER_HEARTBEAT_FILE"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(heartbeat.startswith(mount + "/") for mount in mounts)


def prestop_seconds(container: dict[str, Any]) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


def test_web_grace_period_covers_prestop_and_gunicorns_graceful_timeout() -> None:
    conf = load_gunicorn_conf()
    grace = pod_spec("web")["terminationGracePeriodSeconds"]
    assert grace > prestop_seconds(main_container("web")) + conf["graceful_timeout"]


def test_grpc_grace_period_covers_prestop_and_the_servers_grace() -> None:
    from tasks_app.grpc_api.server import DEFAULT_GRACE_SECONDS

    container = main_container("grpc")
    assert not any(arg.startswith("--grace") for arg in container["args"])
    grace = pod_spec("grpc")["terminationGracePeriodSeconds"]
    assert grace > prestop_seconds(container) + DEFAULT_GRACE_SECONDS


def test_worker_grace_period_outlasts_the_task_time_limit() -> None:
    """A warm shutdown waits for running tasks, which the keeper stops at the limit."""
    limit = float(config_map()["SCHEDULER_TASK_TIME_LIMIT"])
    lease = float(config_map()["SCHEDULER_LEASE_SECONDS"])
    grace = pod_spec("worker")["terminationGracePeriodSeconds"]
    assert grace > limit + lease


def test_deployments_wait_for_migrations_before_starting() -> None:
    for component in ("web", "grpc", "worker"):
        (init,) = pod_spec(component)["initContainers"]
        assert "manage.py migrate --check" in " ".join(init["args"])
    (job_container,) = find("Job", "scheduler-migrate")["spec"]["template"]["spec"][
        "containers"
    ]
    assert job_container["args"][:3] == CONTRACT_COMMANDS["migrate"]


def test_rolling_updates_never_take_a_serving_pod_away_first() -> None:
    for component in ("web", "grpc", "worker"):
        deployment = find("Deployment", f"scheduler-{component}")
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_selectors_match_the_pods_they_mean() -> None:
    labels = {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"]
        for doc in kubernetes_objects()
        if doc["kind"] == "Deployment"
    }
    for document in kubernetes_objects():
        name = document["metadata"]["name"]
        if document["kind"] == "Service":
            selector = document["spec"]["selector"]
            ports = {
                p["name"]
                for p in main_container(name.removeprefix("scheduler-"))["ports"]
            }
            for port in document["spec"]["ports"]:
                assert port["targetPort"] in ports, name
        elif document["kind"] in ("PodDisruptionBudget", "Deployment"):
            selector = document["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert selector.items() <= labels[name].items(), name


def test_secrets_commit_placeholders_only() -> None:
    for document in kubernetes_objects():
        if document["kind"] != "Secret":
            continue
        assert "data" not in document, "base64 data would hide what is committed"
        for key, value in document["stringData"].items():
            assert "REPLACE_ME" in value, f"{document['metadata']['name']}.{key}"


def test_the_config_map_holds_no_secret() -> None:
    for key, value in config_map().items():
        assert "SECRET" not in key and "PASSWORD" not in key, key
        assert "://" not in value, f"{key}: a URL may carry credentials"


def worker_concurrency() -> int:
    args = main_container("worker")["args"]
    (option,) = [arg for arg in args if arg.startswith("--concurrency=")]
    return int(option.split("=", 1)[1])


def test_workers_autoscale_on_queue_depth_up_to_the_global_cap() -> None:
    autoscaler = find("HorizontalPodAutoscaler", "scheduler-worker")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "scheduler-worker",
    }
    (metric,) = autoscaler["metrics"]
    assert metric["external"]["metric"]["name"] == "scheduler_tasks_queued"
    # Pods beyond the cap would only idle: the database never lets more tasks run.
    cap = int(config_map()["SCHEDULER_NUM_WORKERS"])
    assert autoscaler["maxReplicas"] * worker_concurrency() <= cap
    assert autoscaler["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # A fixed count in the Deployment would undo the autoscaler at every apply.
    assert "replicas" not in find("Deployment", "scheduler-worker")["spec"]


def test_flower_runs_once_with_authentication() -> None:
    deployment = find("Deployment", "scheduler-flower")
    assert deployment["spec"]["replicas"] == 1
    sources = [s["secretRef"]["name"] for s in main_container("flower")["envFrom"][2:]]
    assert sources == ["scheduler-flower"]
    assert "FLOWER_BASIC_AUTH" in find("Secret", "scheduler-flower")["stringData"]


# --- compose -----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())  # type: ignore[no-any-return]


def test_compose_runs_every_process_of_the_contract_table() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", *CONTRACT_COMMANDS}
    for name in CONTRACT_COMMANDS:
        assert contract_command(services[name]["command"]) == name
        assert "entrypoint" not in services[name], "tini must stay PID 1"
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["CELERY_BROKER_URL"].startswith("redis://")


def test_compose_redis_never_evicts_queue_keys() -> None:
    command = compose()["services"]["redis"]["command"]
    policy = command[command.index("--maxmemory-policy") + 1]
    assert policy == "noeviction"


def test_compose_starts_the_processes_after_the_migration() -> None:
    services = compose()["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == (
        "service_healthy"
    )
    for name in ("web", "grpc", "worker", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_stop_grace_periods_match_the_drains() -> None:
    services = compose()["services"]

    def seconds(value: str) -> float:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
        assert parts is not None and value, value
        hours, minutes, secs = (int(part or 0) for part in parts.groups())
        return hours * 3600 + minutes * 60 + secs

    conf = load_gunicorn_conf()
    assert seconds(services["web"]["stop_grace_period"]) > conf["graceful_timeout"]
    limit = float(config_map()["SCHEDULER_TASK_TIME_LIMIT"])
    assert seconds(services["worker"]["stop_grace_period"]) > limit
    probe = services["worker"]["healthcheck"]["test"]
    assert probe[1:5] == ["python", "-m", "tasks_app.probes", "worker"]


# --- the image ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_the_image_is_python_311_slim_run_by_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (user,) = [rest for keyword, rest in instructions if keyword == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install --requirement requirements.txt" in runs
    assert "manage.py collectstatic --no-input" in runs


def test_the_images_pid_1_is_tini_passing_sigterm_to_the_main_process() -> None:
    instructions = dict(dockerfile_instructions())
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert Path(entrypoint[0]).name == "tini"
    # -g would signal the whole group, prefork children included.
    assert "-g" not in entrypoint
    assert contract_command(json.loads(instructions["CMD"])) == "web"


# --- gunicorn.conf.py --------------------------------------------------------------------


def load_gunicorn_conf(**environ: str) -> dict[str, Any]:
    """The settings gunicorn takes from the file, checked by gunicorn's validators."""
    saved = dict(os.environ)
    os.environ.update(environ)
    try:
        namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    config = Config()
    settings = {}
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)
            settings[name] = config.settings[name].get()
    return settings


def test_gunicorn_conf_binds_every_interface_on_8000_or_port() -> None:
    assert load_gunicorn_conf()["bind"] == ["0.0.0.0:8000"]
    assert load_gunicorn_conf(PORT="9123")["bind"] == ["0.0.0.0:9123"]


def test_gunicorn_conf_outlasts_the_longest_wait() -> None:
    conf = load_gunicorn_conf()
    assert conf["timeout"] > LONGEST_WAIT_SECONDS
    assert conf["graceful_timeout"] > LONGEST_WAIT_SECONDS
    assert conf["workers"] >= 2
    assert conf["worker_class"] == "gthread" and conf["threads"] >= 2
    assert callable(conf["post_worker_init"])


def test_gunicorn_conf_sets_nothing_gunicorn_does_not_know() -> None:
    namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    known = Config().settings
    for name, value in namespace.items():
        if name.startswith("_") or name.isupper() or callable(value):
            continue
        if isinstance(value, type(os)) or name == "annotations":
            continue
        assert name in known, f"gunicorn has no setting {name!r}"


def test_sigterm_fails_readiness_and_lets_a_long_poll_answer(tmp_path: Path) -> None:
    """gunicorn.conf.py's hook: a SIGTERM ends a ``?wait`` early with a real answer."""
    env = sqlite_environment(tmp_path / "data")
    port = free_port()
    env.update(PORT=str(port), WEB_CONCURRENCY="1")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "scheduler_project.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert server.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, 60, 0.3, "gunicorn /readyz")
        submit = urllib.request.Request(
            f"{base}/api/tasks", b"no worker runs", method="POST"
        )
        with urllib.request.urlopen(submit, timeout=10) as response:
            uuid = json.loads(response.read())["uuid"]

        # No worker runs, so this answer would take the whole 30 s without the hook.
        started = time.monotonic()
        poll = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, urllib.request; "
                "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60)"
                ".read().decode())",
                f"{base}/api/tasks/{uuid}?wait=30",
            ],
            stdout=subprocess.PIPE,
        )
        time.sleep(1.5)
        server.send_signal(signal.SIGTERM)
        out, _ = poll.communicate(timeout=40)
        assert poll.returncode == 0
        assert json.loads(out)["status"] == "queued"
        assert time.monotonic() - started < 15
        assert server.wait(30) == 0
        assert "readiness now fails" in log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


# --- the worker probe --------------------------------------------------------------------


def run_probe(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from tasks_app import probes; code = probes.main(sys.argv[1:]); "
        "assert 'django' not in sys.modules, 'the probe loaded Django'; sys.exit(code)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_worker_probe_passes_on_a_fresh_heartbeat(tmp_path: Path) -> None:
    heartbeat = tmp_path / "worker.heartbeat"
    heartbeat.touch()
    result = run_probe(
        "worker",
        "--max-age",
        "30",
        env={"SCHEDULER_WORKER_HEARTBEAT_FILE": str(heartbeat)},
    )
    assert result.returncode == 0, result.stderr


def test_worker_probe_fails_on_a_stale_or_missing_heartbeat(tmp_path: Path) -> None:
    heartbeat = tmp_path / "worker.heartbeat"
    missing = run_probe("worker", "--file", str(heartbeat))
    assert missing.returncode == 1
    assert "no heartbeat file" in missing.stderr

    heartbeat.touch()
    old = time.time() - 100
    os.utime(heartbeat, (old, old))
    stale = run_probe("worker", "--file", str(heartbeat), "--max-age", "30")
    assert stale.returncode == 1
    assert "stopped ticking" in stale.stderr


def test_worker_probe_without_a_heartbeat_file_setting_is_a_usage_error() -> None:
    result = run_probe("worker", env={"SCHEDULER_WORKER_HEARTBEAT_FILE": ""})
    assert result.returncode == 2


# --- make run's process list and signals -------------------------------------------------


@pytest.mark.parametrize(
    ("broker_url", "flower"),
    [
        ("filesystem://", True),
        ("redis://127.0.0.1:6379/0", True),
        ("sqla+postgresql://postgres@127.0.0.1/test", False),
    ],
)
def test_make_run_starts_flower_only_when_the_broker_has_fanout(
    broker_url: str, flower: bool, tmp_path: Path
) -> None:
    env = run.base_environment({"MY_VARIABLE": "reaches every process"})
    specs = run.process_specs(env, data_dir=tmp_path, broker_url=broker_url)
    names = [spec.name for spec in specs]
    assert names == ["web", "grpc", "worker", *(["flower"] if flower else [])]
    for spec in specs:
        assert spec.env["MY_VARIABLE"] == "reaches every process"
        assert spec.command.startswith("exec ")


def test_make_run_starts_the_contract_commands_on_the_chosen_ports(
    tmp_path: Path,
) -> None:
    env = run.base_environment({"WEB_PORT": "18000", "FLOWER_PORT": "15555"})
    specs = {
        spec.name: spec
        for spec in run.process_specs(
            env, data_dir=tmp_path, broker_url="filesystem://"
        )
    }
    python = sys.executable
    assert specs["web"].argv == [python, "-m", "gunicorn", "scheduler_project.wsgi"]
    assert specs["web"].env["PORT"] == "18000"
    assert specs["grpc"].argv == [python, "manage.py", "rungrpc"]
    celery = [python, "-m", "celery", "-A", "scheduler_project"]
    assert specs["worker"].argv[:6] == [*celery, "worker"]
    assert specs["worker"].env["SCHEDULER_WORKER_HEARTBEAT_FILE"] == str(
        tmp_path / "worker.heartbeat"
    )
    assert specs["flower"].argv == [*celery, "flower", "--port=15555"]


def test_make_run_sends_sigterm_to_the_main_process_alone() -> None:
    """A prefork child resets SIGTERM to its default: a group-wide signal kills tasks."""
    group = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert group.stdout is not None
    child = int(group.stdout.readline())
    try:
        run.MainPidSignals().terminate(group.pid)
        group.wait(10)
        assert _alive(child), "SIGTERM reached the rest of the group"
        run.MainPidSignals().kill(group.pid)
        wait_until(lambda: not _alive(child), 10, message="the group to be killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
