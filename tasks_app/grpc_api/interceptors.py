"""Server interceptors: where authentication plugs into the gRPC server.

An interceptor sees the method (``/scheduler.v1.Scheduler/AddTask``) and the metadata
(``authorization: Bearer TOKEN``) before any handler runs. To refuse a call it returns
``status.refusing_handler(Failure("unauthenticated", ...))`` (or ``"forbidden"``), so the
client gets the same codes and trailing metadata as every other error. Health and
reflection need no token: let the names in ``OPEN_SERVICES`` through.
"""

from __future__ import annotations

import grpc

OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
)


def service_of(method: str) -> str:
    """``/scheduler.v1.Scheduler/AddTask`` -> ``scheduler.v1.Scheduler``."""
    return method.strip("/").split("/", 1)[0]


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """The interceptors of ``manage.py rungrpc``, in the order they run.

    None yet: the development settings have authentication off, and the token check of
    production is still to come here.
    """
    return []
