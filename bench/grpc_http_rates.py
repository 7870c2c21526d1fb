"""AddTask and GetTask calls per second over gRPC and over HTTP, same machine, same run.

Both servers serve one database: ``manage.py rungrpc`` (one process, its default
threads) and gunicorn with the project's ``gunicorn.conf.py`` (gthread workers, access
log off so that neither side pays for a log line per call). Each phase runs
``CONNECTIONS`` client processes, each holding one connection (a gRPC channel, or an
HTTP/1.1 connection kept alive), calling back to back for the phase's duration:

- ``add_task_new``: a request never seen before, so an insert under the admission lock;
- ``add_task_duplicate``: one of a few known requests, answered without the lock;
- ``get_task``: a known UUID.

``run(seconds)`` expects the environment of a migrated database and a broker in
``os.environ`` (``bench.ours_scenarios.admission`` provides it). Run as a script, it
makes a fresh database and a redis-server of its own::

    python bench/grpc_http_rates.py [--quick]

Each phase lasts ``admission_seconds_per_phase`` of ``bench.sizes`` (``--quick``, or
``BENCH_QUICK=1`` / ``BENCH_SMOKE=1`` as for ``make bench``).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, `bench` and `tasks_app` import too
    sys.path.insert(0, str(ROOT))

CONNECTIONS = 4
KNOWN_REQUESTS = 50
PHASES = ("add_task_new", "add_task_duplicate", "get_task")
RUNGRPC = [sys.executable, "manage.py", "rungrpc", "--host", "127.0.0.1"]
GUNICORN_WEB = [
    str(Path(sys.executable).with_name("gunicorn")),
    "scheduler_project.wsgi",
    "--access-logfile",
    "/dev/null",
]
# How long the client processes get to be ready before a phase's clock starts.
START_DELAY_SECONDS = 1.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:g} s")


# --- the servers --------------------------------------------------------------------


@contextmanager
def started(argv: list[str], log_path: Path, env: dict[str, str]) -> Iterator[None]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def grpc_serving(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def http_answering(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


# --- the clients ----------------------------------------------------------------------


class GrpcClient:
    def __init__(self, port: int) -> None:
        import grpc

        from tasks_app.grpc_api.generated import scheduler_pb2, scheduler_pb2_grpc

        self.pb = scheduler_pb2
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    def add_task(self, request: bytes) -> str:
        answer = self.stub.AddTask(self.pb.AddTaskRequest(request=request), timeout=30)
        return str(answer.uuid)

    def get_task(self, uuid: str) -> None:
        self.stub.GetTask(self.pb.GetTaskRequest(uuid=uuid), timeout=30)

    def close(self) -> None:
        self.channel.close()


class HttpClient:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()  # the whole body, or the connection cannot be reused
        if response.status not in (200, 201):
            raise RuntimeError(f"{method} {path} answered {response.status}: {data!r}")
        return data

    def add_task(self, request: bytes) -> str:
        return str(json.loads(self._call("POST", "/api/tasks", request))["uuid"])

    def get_task(self, uuid: str) -> None:
        self._call("GET", f"/api/tasks/{uuid}")

    def close(self) -> None:
        self.connection.close()


def client(protocol: str, port: int) -> GrpcClient | HttpClient:
    return GrpcClient(port) if protocol == "grpc" else HttpClient(port)


def warm_up() -> None:
    """Pool initializer: import the clients' modules before any clock runs."""
    import grpc  # noqa: F401

    from tasks_app.grpc_api.generated import scheduler_pb2_grpc  # noqa: F401


def calls_until(
    protocol: str,
    port: int,
    phase: str,
    known: list[tuple[bytes, str]],
    start_at: float,
    seconds: float,
) -> tuple[int, int, float]:
    """One client process: calls back to back for ``seconds`` from ``start_at``.

    Answers (calls, errors, how late it started): a client that was not connected by
    ``start_at`` still runs a full window, shifted by that much.
    """
    connection = client(protocol, port)
    prefix = uuid_module.uuid4().hex.encode()
    calls = errors = 0
    try:
        connection.get_task(known[0][1])  # connect before the clock starts
        time.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        stop_at = began + seconds
        while time.time() < stop_at:
            try:
                if phase == "add_task_new":
                    connection.add_task(b"new %s %d" % (prefix, calls))
                elif phase == "add_task_duplicate":
                    connection.add_task(known[calls % len(known)][0])
                else:
                    connection.get_task(known[calls % len(known)][1])
            except Exception:
                errors += 1
                if (
                    protocol == "http"
                ):  # a failed exchange leaves the connection unusable
                    connection.close()
                    connection = client(protocol, port)
            calls += 1
    finally:
        connection.close()
    return calls - errors, errors, began - start_at


# --- the measurement ------------------------------------------------------------------


def measure(
    pool: Any, protocol: str, port: int, known: list[tuple[bytes, str]], seconds: float
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    # Unmeasured: connects every client and warms the server's threads and their
    # database connections, which the first measured phase would otherwise pay for.
    pool.starmap(
        calls_until,
        [(protocol, port, "get_task", known, time.time() + START_DELAY_SECONDS, 0.5)]
        * CONNECTIONS,
    )
    for phase in PHASES:
        start_at = time.time() + START_DELAY_SECONDS
        results = pool.starmap(
            calls_until,
            [(protocol, port, phase, known, start_at, seconds)] * CONNECTIONS,
        )
        calls = sum(ok for ok, _, _ in results)
        errors = sum(failed for _, failed, _ in results)
        late = max(late for _, _, late in results)
        figures[f"{phase}_per_second"] = round(calls / seconds, 1)
        if errors:
            figures[f"{phase}_errors"] = errors
        if late > 0.1 * seconds:  # the clients overlapped less than the figure assumes
            figures[f"{phase}_late_start_seconds"] = round(late, 2)
    return figures


def run(seconds: float) -> dict[str, Any]:
    """Calls per second over gRPC and HTTP, new and duplicate AddTask, and GetTask, in
    phases of ``seconds`` each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("SCHEDULER_QUEUE_SIZE", "1000000")  # the bound is not measured
    grpc_port, http_port = free_port(), free_port()
    logs = Path(env.get("BENCH_LOG_DIR", ROOT / "bench" / "results" / "logs"))
    logs.mkdir(parents=True, exist_ok=True)

    with ExitStack() as stack:
        stack.enter_context(
            started(
                [*RUNGRPC, "--port", str(grpc_port)],
                logs / "grpc_http_rates-rungrpc.log",
                env,
            )
        )
        stack.enter_context(
            started(
                [*GUNICORN_WEB, "--bind", f"127.0.0.1:{http_port}"],
                logs / "grpc_http_rates-gunicorn.log",
                env,
            )
        )
        wait_for(lambda: grpc_serving(grpc_port), 60, "rungrpc")
        wait_for(lambda: http_answering(http_port), 60, "gunicorn")

        seeder = GrpcClient(grpc_port)
        requests = [b"known %d" % n for n in range(KNOWN_REQUESTS)]
        known = [(request, seeder.add_task(request)) for request in requests]
        seeder.close()

        # spawn, not fork: a forked child would inherit this process's gRPC state.
        context = multiprocessing.get_context("spawn")
        with context.Pool(CONNECTIONS, initializer=warm_up) as pool:
            figures = {
                "grpc": measure(pool, "grpc", grpc_port, known, seconds),
                "http": measure(pool, "http", http_port, known, seconds),
            }

    figures["setup"] = {
        "connections": CONNECTIONS,
        "seconds_per_phase": seconds,
        "cpus": os.cpu_count(),
        "grpc_server": "manage.py rungrpc: 1 process, its default threads",
        "http_server": "gunicorn with gunicorn.conf.py (gthread), access log off",
    }
    return figures


def print_figures(figures: dict[str, Any]) -> None:
    print(f"{'calls per second':<22}{'gRPC':>10}{'HTTP':>10}")
    for phase in PHASES:
        key = f"{phase}_per_second"
        print(f"{phase:<22}{figures['grpc'][key]:>10.0f}{figures['http'][key]:>10.0f}")
    for protocol in ("grpc", "http"):
        for key, value in figures[protocol].items():
            if key.endswith(("_errors", "_late_start_seconds")):
                print(f"{protocol} {key}: {value}")
    print(json.dumps(figures["setup"]))


def main(argv: list[str]) -> int:
    from bench import sizes
    from bench.services import services

    chosen = sizes.QUICK if "--quick" in argv else sizes.from_environment()

    with services("grpc_http_rates") as env:
        os.environ.update(
            {
                "DATABASE_URL": env.database_url,
                "CELERY_BROKER_URL": env.broker_url,
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "LOG_LEVEL": "WARNING",
            }
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        print_figures(run(chosen.admission_seconds_per_phase))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
