"""The gRPC server: the Scheduler service, the standard health service and reflection.

Health is SERVING for ``""`` and ``scheduler.v1.Scheduler`` while the database and the
broker answer (the checks of HTTP's ``/readyz``, every few seconds), and until SIGTERM;
closing the scheduler is no health change (a closed scheduler still answers every call).
On SIGTERM health turns NOT_SERVING, new calls are refused, and calls in flight get up
to the grace period to finish; pending waits answer just before it ends. With
SCHEDULER_GRPC_TLS_CERT and SCHEDULER_GRPC_TLS_KEY set, the port speaks TLS only.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc
from django.core.exceptions import ImproperlyConfigured
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .interceptors import server_interceptors
from .servicer import SchedulerServicer, answer_margin

log = logging.getLogger(__name__)

# Room above SCHEDULER_MAX_REQUEST_BYTES for the message's own framing: a request just
# over the limit then reaches the scheduler and is refused with a message that names
# the limit, instead of failing in the transport.
MESSAGE_HEADROOM_BYTES = 1024 * 1024
DEFAULT_THREADS = 10
# Waits (WaitDrained) may hold at most this share of the threads; the others answer
# everything else, health checks included, however many clients wait. The health
# service could have threads of its own instead, but only on a second grpc.Server on
# another port, which the probes and the contract do not know; and State, GetTask and
# AddTask would still queue behind the waits.
WAIT_SHARE_OF_THREADS = 0.5
DEFAULT_GRACE_SECONDS = 20.0
DEFAULT_HEALTH_INTERVAL_SECONDS = 5.0


def scheduler_descriptor() -> ServiceDescriptor:
    from .generated import scheduler_pb2

    descriptor: ServiceDescriptor = scheduler_pb2.DESCRIPTOR.services_by_name[
        "Scheduler"
    ]
    return descriptor


class GrpcServer:
    """A ``grpc.Server`` serving ``scheduler``; ``start`` binds, ``stop`` drains."""

    def __init__(
        self,
        scheduler: object,
        *,
        host: str = "0.0.0.0",
        port: int = 50051,
        threads: int = DEFAULT_THREADS,
        max_request_bytes: int,
        descriptor: ServiceDescriptor | None = None,
        interceptors: Sequence[grpc.ServerInterceptor] | None = None,
        health_interval_seconds: float | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.address = f"{host}:{port}"
        self.credentials = credentials
        self.descriptor = descriptor or scheduler_descriptor()
        if threads < 2:
            raise ValueError(
                f"the gRPC server needs at least 2 threads, not {threads}: waits may "
                "take at most half of them"
            )
        self.servicer = SchedulerServicer(
            scheduler,
            self.descriptor,
            max_waits=int(threads * WAIT_SHARE_OF_THREADS),
        )
        max_message_bytes = max_request_bytes + MESSAGE_HEADROOM_BYTES
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="grpc-call"
            ),
            interceptors=list(
                server_interceptors() if interceptors is None else interceptors
            ),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # gRPC sets SO_REUSEPORT by default, so a second server on a taken
                # port would start and share it silently; fail at bind instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.port = 0
        self.probe = (
            None
            if health_interval_seconds is None
            else ReadinessProbe(self, health_interval_seconds)
        )

    def start(self) -> int:
        """Bind and serve; the bound port (useful with port 0)."""
        service = self.descriptor.full_name
        handlers = self.servicer.handlers()
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),)
        )
        self.server.add_registered_method_handlers(service, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                service,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
            pool=self.descriptor.file.pool,
        )
        # Health is settled before the port opens: the servicer starts with "" SERVING,
        # which a server whose database is down must not answer even once.
        if self.probe is None:
            self.set_serving(True)
        else:
            self.probe.check()
        if self.credentials is None:
            self.port = self.server.add_insecure_port(self.address)
        else:
            self.port = self.server.add_secure_port(self.address, self.credentials)
        self.server.start()
        if self.probe is not None:
            self.probe.start()
        log.info(
            "grpc: serving %s on %s (port %d, %s)",
            service,
            self.address,
            self.port,
            "plaintext" if self.credentials is None else "TLS",
            extra={"event": "grpc_started", "port": self.port},
        )
        return self.port

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", self.descriptor.full_name):
            self.health.set(name, status)

    def stop(self, grace_seconds: float) -> None:
        """NOT_SERVING at once, then refuse new calls; those in flight may finish.

        Pending waits may still see the drain during the grace, and answer as the
        scheduler stands just before it ends.
        """
        # After this, the health servicer ignores every set(): the probe cannot turn a
        # stopping server back to SERVING.
        self.health.enter_graceful_shutdown()
        if self.probe is not None:
            self.probe.stop()
        log.info(
            "grpc: stopping, health NOT_SERVING; calls in flight have %.0f s",
            grace_seconds,
            extra={"event": "grpc_stopping"},
        )
        # grpcio cancels what is left at the end of the grace, which would also end the
        # waits (through their callbacks), but with CANCELLED instead of an answer.
        end_waits = threading.Timer(
            max(0.0, grace_seconds - answer_margin(grace_seconds)),
            self.servicer.waits.end_all,
        )
        end_waits.daemon = True
        end_waits.start()
        try:
            self.server.stop(grace_seconds).wait()
        finally:
            end_waits.cancel()
            # A wait whose end grpcio did not report must not keep the process alive:
            # the pool's threads are joined at exit.
            self.servicer.waits.end_all()
        log.info("grpc: stopped", extra={"event": "grpc_stopped"})


class ReadinessProbe(threading.Thread):
    """Asks the database and the broker every ``interval_seconds``; sets health by it."""

    def __init__(self, server: GrpcServer, interval_seconds: float) -> None:
        super().__init__(name="grpc-health-probe", daemon=True)
        self.server = server
        self.interval_seconds = interval_seconds
        self.stopping = threading.Event()
        self.ready: bool | None = None

    def run(self) -> None:
        while not self.stopping.wait(self.interval_seconds):
            self.check()

    def stop(self) -> None:
        self.stopping.set()

    def check(self) -> None:
        from django.db import connections

        from ..health import check_broker, check_database

        try:
            failed = [c for c in (check_database(), check_broker()) if not c.ok]
        finally:
            # Not a thread of Django's: its connection is ours to close, or a database
            # restart leaves it broken for every later probe.
            connections.close_all()
        ready = not failed
        if ready != self.ready:
            if ready:
                log.info("grpc: health SERVING", extra={"event": "grpc_serving"})
            else:
                log.warning(
                    "grpc: health NOT_SERVING (%s); calls are still answered, and the "
                    "probe asks again in %.0f s",
                    "; ".join(f"{c.name}: {c.detail}" for c in failed),
                    self.interval_seconds,
                    extra={"event": "grpc_not_serving"},
                )
            self.ready = ready
            self.server.set_serving(ready)


def tls_credentials(cert_path: str, key_path: str) -> grpc.ServerCredentials | None:
    """Server credentials from PEM files; ``None`` when neither is set."""
    if not cert_path and not key_path:
        return None
    if not cert_path or not key_path:
        raise ImproperlyConfigured(
            "gRPC TLS needs both SCHEDULER_GRPC_TLS_CERT and SCHEDULER_GRPC_TLS_KEY; "
            "only one is set"
        )
    try:
        certificate = Path(cert_path).read_bytes()
        key = Path(key_path).read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"gRPC TLS: cannot read {exc.filename} ({exc.strerror})"
        ) from exc
    return grpc.ssl_server_credentials([(key, certificate)])


def serve(
    host: str,
    port: int,
    threads: int = DEFAULT_THREADS,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    health_interval_seconds: float = DEFAULT_HEALTH_INTERVAL_SECONDS,
) -> None:
    """Serve this process's scheduler until SIGTERM or SIGINT, then drain and return."""
    from django.conf import settings

    from ..dispatch import prepare
    from ..scheduler import get_scheduler

    scheduler = get_scheduler()
    # Before the port opens: the first AddTask must not pay Celery's first-publish setup.
    prepare()
    server = GrpcServer(
        scheduler,
        host=host,
        port=port,
        threads=threads,
        max_request_bytes=scheduler.max_request_bytes,
        health_interval_seconds=health_interval_seconds,
        credentials=tls_credentials(
            settings.SCHEDULER_GRPC_TLS_CERT, settings.SCHEDULER_GRPC_TLS_KEY
        ),
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("grpc: %s received", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    stop_requested.wait()
    server.stop(grace_seconds)
