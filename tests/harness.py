"""Real processes for the tests: a private redis-server, Celery workers, call logs.

Nothing here mocks anything: a worker is ``celery -A scheduler_project worker`` in its own
process group, talking to the test database and to a redis-server of the test's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:  # Django is set up by the tests, not by this module's import
    from tasks_app.leases import Claim
    from tasks_app.scheduler import Scheduler

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")


class RedisServer:
    """A redis-server on a free port, with no persistence, that a test may restart."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError(
                "redis-server is not installed; the tests need a real Redis"
            )
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="test-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, message=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, check=True
        ).stdout

    def flushall(self) -> None:
        self.command("FLUSHALL")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self, down_seconds: float = 0.5) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


@dataclasses.dataclass
class Call:
    hash: str
    pid: int
    start: float
    end: float | None


class CallLog:
    """The file the test processor appends to; ``calls()`` reads it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def calls(self) -> list[Call]:
        open_calls: dict[tuple[str, int], Call] = {}
        calls: list[Call] = []
        for line in self.path.read_text().splitlines():
            event, digest, pid, at = line.split()
            key = (digest, int(pid))
            if event == "start":
                call = Call(digest, int(pid), float(at), None)
                open_calls[key] = call
                calls.append(call)
            elif key in open_calls:
                open_calls.pop(key).end = float(at)
        return calls

    def still_running(self, call: Call) -> bool:
        """Whether ``call`` has logged no end yet."""
        return any(
            c.hash == call.hash
            and c.pid == call.pid
            and c.start == call.start
            and c.end is None
            for c in self.calls()
        )

    def calls_per_hash(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.calls():
            counts[call.hash] = counts.get(call.hash, 0) + 1
        return counts

    def overlapping(self, limit: int) -> list[Call]:
        """The calls running at the first moment more than ``limit`` ran at once."""
        calls = self.calls()
        moments = sorted(call.start for call in calls)
        for moment in moments:
            running = [
                call
                for call in calls
                if call.start <= moment and (call.end is None or call.end > moment)
            ]
            if len(running) > limit:
                return running
        return []

    def peak_concurrency(self) -> int:
        """The most calls running at one moment, across every process.

        A call without an end (its process was killed) counts until the end of the log.
        """
        edges: list[tuple[float, int]] = []
        for call in self.calls():
            edges.append((call.start, 1))
            edges.append((call.end if call.end is not None else float("inf"), -1))
        peak = running = 0
        for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
            running += step
            peak = max(peak, running)
        return peak


def task_request(**spec: object) -> bytes:
    """The bytes of a request for ``tests.processors.RecordingProcessor``."""
    return json.dumps(spec, sort_keys=True).encode()


def hold_slot(scheduler: Scheduler, name: str) -> Claim:
    """Take a slot in the test's own process, as a worker would, running nothing."""
    from tasks_app import leases

    uuid = scheduler.add_task(task_request(id=name))
    claim = leases.claim(
        uuid, worker="test", num_workers=scheduler.num_workers, lease_seconds=60
    )
    assert claim is not None and claim.uuid == uuid
    return claim


class Worker:
    """``celery worker`` in a process group of its own."""

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        concurrency: int,
        log_dir: Path,
        pool: str = "prefork",
    ) -> None:
        self.name = name
        self.heartbeat = log_dir / f"{name}.heartbeat"
        self.log_path = log_dir / f"{name}.log"
        env = {**env, "SCHEDULER_WORKER_HEARTBEAT_FILE": str(self.heartbeat)}
        self.heartbeat.unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                CELERY,
                "-A",
                "scheduler_project",
                "worker",
                "-l",
                "info",
                "-n",
                f"{name}@%h",
                "-c",
                str(concurrency),
                "-P",
                pool,
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> Worker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log_tail()}")
            return self.heartbeat.exists()

        wait_until(ready, timeout, message=f"worker {self.name} to be ready")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        try:
            return [child.pid for child in psutil.Process(self.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def terminate(self) -> None:
        """SIGTERM to the main process only: Celery's warm shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the whole process group, as a node loss or OOM of the pod does."""
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(
            self.log_path.read_text(errors="replace").splitlines()[-lines:]
        )


class Cluster:
    """The environment shared by the processes of one test, and the workers it started."""

    def __init__(self, database_url: str, broker_url: str, workdir: Path) -> None:
        self.workdir = workdir
        self.call_log = CallLog(workdir / "calls.log")
        self.workers: list[Worker] = []
        self.env: dict[str, str] = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SCHEDULER_", "CELERY_"))
            },
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "PYTHONPATH": str(ROOT),
            "SCHEDULER_PROCESSOR": "tests.processors:RecordingProcessor",
            "SCHEDULER_DATA_DIR": str(workdir / "data"),
            "TEST_CALL_LOG": str(self.call_log.path),
            "SCHEDULER_LEASE_SECONDS": "3",
            "SCHEDULER_RECONCILE_INTERVAL": "0.5",
            "LOG_LEVEL": "INFO",
        }

    def configure(self, **settings: object) -> None:
        """Set SCHEDULER_* variables for the processes started from now on."""
        for key, value in settings.items():
            self.env[key.upper()] = str(value)

    def start_worker(
        self,
        concurrency: int = 2,
        name: str | None = None,
        pool: str = "prefork",
        wait: bool = True,
    ) -> Worker:
        worker = Worker(
            self.env,
            name or f"w{len(self.workers) + 1}",
            concurrency,
            self.workdir,
            pool=pool,
        )
        self.workers.append(worker)
        return worker.wait_ready() if wait else worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def kill(self) -> None:
        """SIGKILL every worker: for tests that leave long calls running."""
        for worker in self.workers:
            worker.kill()

    def logs(self) -> str:
        return "\n\n".join(f"--- {w.name}\n{w.log_tail()}" for w in self.workers)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def submit_from_processes(
    env: dict[str, str],
    requests: list[bytes],
    processes: int,
    threads: int,
    start_delay: float = 3.0,
) -> list[dict[str, object]]:
    """Every request submitted by ``processes`` x ``threads`` clients released together."""
    start_at = time.time() + start_delay
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.submitter",
                "--threads",
                str(threads),
                "--start-at",
                str(start_at),
                *[request.hex() for request in requests],
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    answers: list[dict[str, object]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"submitter failed: {err.decode()[-2000:]}")
        answers.extend(json.loads(line) for line in out.decode().splitlines())
    return answers


class TcpProxy:
    """A TCP forwarder on a free port that a test can cut, as a network partition."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:  # accepted just as it was cut
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        if self._listener is not None:
            # close() alone leaves a socket that another thread waits on in accept()
            # listening; shutdown() stops it and wakes that thread.
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self.start()


class WebServer:
    """gunicorn with the project's gunicorn.conf.py, on a free port, as one web replica."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        name: str = "web",
        workers: int = 2,
        threads: int | None = None,
    ) -> None:
        self.env = env
        self.name = name
        self.workers = workers
        # None: gunicorn.conf.py's own (GUNICORN_THREADS, or 8).
        self.threads = threads
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        log = self.log_path.open("ab")
        threads = [] if self.threads is None else ["--threads", str(self.threads)]
        self.process = subprocess.Popen(
            [
                gunicorn,
                "scheduler_project.wsgi",
                "--workers",
                str(self.workers),
                *threads,
            ],
            cwd=ROOT,
            env={**self.env, "PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(
            lambda: self.request("GET", "/healthz")[0] == 200,
            60,
            message=f"{self.name} to answer",
        )
        return self

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, object]]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


def wait_process_gone(pid: int, timeout: float, message: str) -> float:
    """Wait until ``pid`` has exited (or is a zombie); return when that was seen."""

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, timeout, interval=0.05, message=message)
    return time.time()


def broker_messages(redis_server: RedisServer, queue: str = "celery") -> int:
    """How many messages wait in a Celery queue of this Redis."""
    return int(redis_server.command("LLEN", queue).strip() or 0)
