"""One generic servicer: every RPC of the service calls the Scheduler method of its name.

The handlers are built from the service descriptor and the schema of the Scheduler's
class, and the two are checked against each other first: a method added without
regenerating the modules stops the server at start rather than failing its first call.
A method that blocks (its schema names a stop Event) is called as a wait (``waits``).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import grpc
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message as ProtoMessage

from .codec import fill_response, request_kwargs
from .schema import Message, Rpc, Service, build_service
from .status import abort, failure_of
from .waits import Waits

log = logging.getLogger(__name__)

REGENERATE = "python -m tasks_app.grpc_api.generate"
# A wait that runs into the client's deadline is an answer nobody reads. The wait ends
# with one more look at the state, a query that a busy SQLite file can hold for tens of
# milliseconds: a tenth of the time left, within these bounds, stays clear of it.
DEADLINE_MARGIN_SECONDS = (0.2, 1.0)


class GeneratedCodeOutOfDate(ImproperlyConfigured):
    """The compiled gRPC modules do not match the Scheduler: regenerate them."""


class SchedulerServicer:
    """Serves ``scheduler`` through the RPCs of ``descriptor``."""

    def __init__(
        self, scheduler: object, descriptor: ServiceDescriptor, *, max_waits: int
    ) -> None:
        self.scheduler = scheduler
        self.descriptor = descriptor
        self.service: Service = build_service(type(scheduler))
        check_descriptor(self.service, descriptor)
        self.waits = Waits(max_waits)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """RPC name -> handler, for ``grpc.method_handlers_generic_handler``."""
        handlers = {}
        for rpc in self.service.rpcs:
            method = self.descriptor.methods_by_name[rpc.name]
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            handlers[rpc.name] = grpc.unary_unary_rpc_method_handler(
                functools.partial(self.call, rpc, response_class),
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )
        return handlers

    def call(
        self,
        rpc: Rpc,
        response_class: type[ProtoMessage],
        request: ProtoMessage,
        context: grpc.ServicerContext,
    ) -> ProtoMessage:
        # The server's threads are not Django's: nothing closes a connection that a
        # database restart broke, or one past CONN_MAX_AGE, unless we do, around each
        # call, as Django does around each HTTP request.
        close_old_connections()
        started = time.perf_counter()
        try:
            kwargs = request_kwargs(rpc, request)
            fit_timeout_to_deadline(kwargs, context)
            method = getattr(self.scheduler, rpc.method_name)
            if rpc.stop_parameter is None:
                value = method(**kwargs)
            else:
                with self.waits.held(context) as stop:
                    value = method(**kwargs, **{rpc.stop_parameter: stop})
            return fill_response(rpc, value, response_class())
        except Exception as exc:
            failure = failure_of(exc)
            self.log_failure(rpc, request, failure.code, exc)
            abort(context, failure)
        finally:
            close_old_connections()
            log.debug(
                "rpc %s: ended in %.1f ms",
                rpc.name,
                (time.perf_counter() - started) * 1000,
                extra={"event": "grpc_call", "rpc": rpc.name},
            )

    def log_failure(
        self, rpc: Rpc, request: ProtoMessage, code: str, exc: Exception
    ) -> None:
        task_uuid = str(getattr(request, "uuid", ""))
        # The same words with and without a task, formatted only if the line is kept.
        about = "rpc %s: task %s" if task_uuid else "rpc %s%s"
        extra = {"event": "grpc_error", "rpc": rpc.name, "code": code}
        if task_uuid:
            extra["task_uuid"] = task_uuid
        if code == "internal":
            log.error(
                about + ": failed unexpectedly",
                rpc.name,
                task_uuid,
                exc_info=exc,
                extra=extra,
            )
        elif code == "unavailable":
            log.warning(
                about + ": %s; the next call reconnects",
                rpc.name,
                task_uuid,
                exc,
                extra=extra,
            )
        elif code == "too_many_waits":
            # Not the client's mistake: many of these say rungrpc needs more threads.
            log.warning(
                about + ": refused: %s",
                rpc.name,
                task_uuid,
                exc,
                extra=extra,
            )
        else:
            log.debug(
                about + ": refused (%s): %s",
                rpc.name,
                task_uuid,
                code,
                exc,
                extra=extra,
            )


def fit_timeout_to_deadline(kwargs: dict[str, Any], context: Any) -> None:
    """Cap a ``timeout`` argument at the client's deadline, so the answer still arrives.

    Without it, a client that waits 5 s on a 60 s ``wait_drained`` holds a server thread
    for the other 55 s after it stopped listening.
    """
    timeout = kwargs.get("timeout")
    remaining = context.time_remaining()
    if not isinstance(timeout, int | float) or remaining is None:
        return
    limit = max(0.0, remaining - answer_margin(remaining))
    if timeout > limit:  # a negative timeout stays, for the scheduler to refuse
        kwargs["timeout"] = limit


def answer_margin(seconds: float) -> float:
    """How long before the end of ``seconds`` a wait should end, to answer in time."""
    low, high = DEADLINE_MARGIN_SECONDS
    return min(high, max(low, seconds / 10))


def check_descriptor(service: Service, descriptor: ServiceDescriptor) -> None:
    """Fail unless ``descriptor`` has exactly the RPCs and fields that ``service`` has."""
    problems = []
    served = set(descriptor.methods_by_name)
    wanted = {rpc.name for rpc in service.rpcs}
    problems += [f"no RPC for Scheduler method {name}" for name in wanted - served]
    problems += [f"RPC {name} has no Scheduler method" for name in served - wanted]
    for rpc in service.rpcs:
        method = descriptor.methods_by_name.get(rpc.name)
        if method is not None:
            problems += _field_problems(rpc.request, method.input_type)
            problems += _field_problems(rpc.response, method.output_type)
    if problems:
        raise GeneratedCodeOutOfDate(
            f"{descriptor.full_name} is out of date with the Scheduler ("
            + "; ".join(sorted(problems))
            + f"): run `{REGENERATE}`"
        )


def _field_problems(spec: Message, descriptor: Descriptor) -> list[str]:
    wanted = {field.name for field in spec.fields}
    present = set(descriptor.fields_by_name)
    if wanted == present:
        return []
    return [f"{spec.name} has fields {sorted(present)}, not {sorted(wanted)}"]
