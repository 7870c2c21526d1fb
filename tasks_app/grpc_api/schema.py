"""The gRPC service as the Scheduler's public methods describe it, read by introspection.

Each public method is an RPC; its parameters are the fields of ``<Method>Request`` and its
return value the fields of ``<Method>Response``. The generator renders this description as
a ``.proto`` and the server converts between messages and Python values with it, so the
two can never disagree about a type.

How Python types map:

- ``bytes``, ``str``, ``bool``, ``int``, ``float`` are ``bytes``, ``string``, ``bool``,
  ``int64``, ``double``; a ``NewType`` (``UUID``) is its base type.
- A string enum (``TaskStatus``) is a ``string`` holding its value, as in the HTTP JSON:
  adding a status then changes no message, and clients compare the same words over both.
- ``datetime`` is ``google.protobuf.Timestamp``, absent when ``None``.
- ``X | None``, and any parameter with a default, is a field with presence (``optional``):
  absent means ``None``, or the parameter's default.
- ``list[X]`` is ``repeated``; a dataclass is a message of its fields (``FindOperator``).
- A keyword-only ``threading.Event | None = None`` parameter is no field: it is how a
  blocking method (``wait_drained``) learns that its call has ended, and the server
  passes one that it sets then. Such an RPC is a *wait* (``Rpc.stop_parameter``).
- A reply is flat, mirroring the HTTP JSON: a dataclass contributes its fields, a ``str``
  subclass (``Admission``) its value as ``uuid`` and then its annotated attributes, a plain
  value one field named after the last word of the method (``wait_drained`` -> ``drained``).
  Bytes are left out of replies: the tasks the scheduler answers carry no bytes (their
  sizes are fields), and results are downloaded over HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import threading
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

PACKAGE = "scheduler.v1"
SERVICE = "Scheduler"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"
TIMESTAMP = "google.protobuf.Timestamp"

_SCALARS: dict[type, str] = {
    bytes: "bytes",
    str: "string",
    bool: "bool",
    int: "int64",
    float: "double",
}


class UnsupportedType(TypeError):
    """A public method of the Scheduler uses a type that has no protobuf mapping.

    Use the types listed in ``tasks_app.grpc_api.schema``, or make the method private.
    """


class Codec(enum.Enum):
    """How a field's value crosses between Python and protobuf."""

    SCALAR = "scalar"
    ENUM = "enum"
    TIMESTAMP = "timestamp"
    MESSAGE = "message"


@dataclass(frozen=True)
class Field:
    name: str
    proto_type: str
    codec: Codec
    python_type: Any
    repeated: bool = False
    optional: bool = False
    message: Message | None = None
    comment: str = ""

    @property
    def lock_type(self) -> str:
        """What must never change for this field number: the wire type and the label."""
        return f"repeated {self.proto_type}" if self.repeated else self.proto_type


@dataclass(frozen=True)
class Message:
    name: str
    fields: tuple[Field, ...]
    doc: str = ""
    python_type: Any = None

    def field(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)


class ReplyShape(enum.Enum):
    """How a method's return value becomes the fields of its response."""

    EMPTY = "empty"
    OBJECT = "object"
    STRING_WITH_ATTRIBUTES = "string with attributes"
    VALUE = "value"


@dataclass(frozen=True)
class Parameter:
    name: str
    has_default: bool


@dataclass(frozen=True)
class Rpc:
    name: str
    method_name: str
    request: Message
    response: Message
    parameters: tuple[Parameter, ...]
    reply_shape: ReplyShape
    doc: str = ""
    # The Event parameter that ends the call's method early; None for an RPC that
    # does not block.
    stop_parameter: str | None = None


@dataclass(frozen=True)
class Service:
    package: str
    name: str
    rpcs: tuple[Rpc, ...]
    messages: tuple[Message, ...]
    doc: str = ""
    source: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.package}.{self.name}"

    def rpc(self, name: str) -> Rpc:
        for rpc in self.rpcs:
            if rpc.name == name:
                return rpc
        raise KeyError(name)


def camel_case(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_") if part)


def public_methods(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The operations of ``cls``: public plain methods, base classes' first.

    Class and static methods (``from_settings``) and properties build or describe a
    scheduler rather than operate it, so they are no RPCs.
    """
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name in vars(klass):
            if name.startswith("_") or name in seen:
                continue
            if inspect.isfunction(inspect.getattr_static(cls, name)):
                seen.add(name)
                yield name, getattr(cls, name)


def build_service(scheduler_class: type) -> Service:
    """The description of the service that ``scheduler_class`` implies."""
    builder = _Builder()
    rpcs = tuple(
        builder.rpc(name, method) for name, method in public_methods(scheduler_class)
    )
    # Requests and responses in the order of the methods, the shared messages after them.
    messages = [message for rpc in rpcs for message in (rpc.request, rpc.response)]
    return Service(
        package=PACKAGE,
        name=SERVICE,
        rpcs=rpcs,
        messages=(*messages, *builder.shared.values()),
        doc=inspect.getdoc(scheduler_class) or "",
        source=f"{scheduler_class.__module__}.{scheduler_class.__qualname__}",
    )


class _Builder:
    """Walks the type hints, collecting each shared message once, in the order met."""

    def __init__(self) -> None:
        self.shared: dict[str, Message] = {}

    def rpc(self, method_name: str, method: Callable[..., Any]) -> Rpc:
        rpc_name = camel_case(method_name)
        where = f"Scheduler.{method_name}"
        hints = typing.get_type_hints(method)
        signature = inspect.signature(method)

        fields: list[Field] = []
        parameters: list[Parameter] = []
        stop_parameter = None
        for parameter in list(signature.parameters.values())[1:]:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise UnsupportedType(f"{where}: *args and **kwargs have no fields")
            if parameter.name not in hints:
                raise UnsupportedType(
                    f"{where}: parameter {parameter.name} has no hint"
                )
            if _is_stop(parameter, hints[parameter.name], where):
                stop_parameter = parameter.name
                continue
            has_default = parameter.default is not parameter.empty
            field = self.field(
                parameter.name,
                hints[parameter.name],
                f"{where}({parameter.name})",
                reply=False,
            )
            if has_default and not field.repeated:
                field = dataclasses.replace(field, optional=True)
            fields.append(field)
            parameters.append(Parameter(parameter.name, has_default))
        request = Message(f"{rpc_name}Request", tuple(fields))

        if "return" not in hints:
            raise UnsupportedType(f"{where}: the return type has no hint")
        shape, reply_fields = self.reply(method_name, hints["return"], where)
        response = Message(
            f"{rpc_name}Response", tuple(reply_fields), python_type=hints["return"]
        )

        return Rpc(
            name=rpc_name,
            method_name=method_name,
            request=request,
            response=response,
            parameters=tuple(parameters),
            reply_shape=shape,
            doc=inspect.getdoc(method) or "",
            stop_parameter=stop_parameter,
        )

    def reply(
        self, method_name: str, hint: Any, where: str
    ) -> tuple[ReplyShape, list[Field]]:
        if hint is None or hint is type(None):
            return ReplyShape.EMPTY, []
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            return ReplyShape.OBJECT, self.object_fields(hint, where, reply=True)
        if (
            isinstance(hint, type)
            and issubclass(hint, str)
            and not issubclass(hint, enum.Enum)
            and hint is not str
        ):
            value = self.field("uuid", str, where, reply=True)
            attributes = [
                self.field(name, attribute, f"{where} -> {hint.__name__}.{name}", True)
                for name, attribute in typing.get_type_hints(hint).items()
            ]
            return ReplyShape.STRING_WITH_ATTRIBUTES, [value, *attributes]
        name = method_name.rsplit("_", 1)[-1]
        return ReplyShape.VALUE, [self.field(name, hint, f"{where} -> return", True)]

    def object_fields(self, cls: type, where: str, reply: bool) -> list[Field]:
        hints = typing.get_type_hints(cls)
        fields = []
        for item in dataclasses.fields(cls):
            field = self.field(
                item.name, hints[item.name], f"{where} -> {item.name}", reply
            )
            if not (reply and field.proto_type == "bytes"):
                fields.append(field)
        return fields

    def field(self, name: str, hint: Any, where: str, reply: bool) -> Field:
        hint, optional = _strip_none(hint, where)
        origin = typing.get_origin(hint)
        if origin is list:
            (item,) = typing.get_args(hint)
            if optional:
                raise UnsupportedType(f"{where}: a list cannot be None; use []")
            item_field = self.field(name, item, where, reply)
            return dataclasses.replace(item_field, repeated=True)
        if isinstance(hint, typing.NewType):
            base = self.field(name, hint.__supertype__, where, reply)
            return dataclasses.replace(base, optional=optional)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            values = [member.value for member in hint]
            if not all(isinstance(value, str) for value in values):
                raise UnsupportedType(f"{where}: {hint.__name__} is not a string enum")
            return Field(
                name,
                "string",
                Codec.ENUM,
                hint,
                optional=optional,
                comment="one of: " + ", ".join(values),
            )
        if hint is dt.datetime:
            return Field(name, TIMESTAMP, Codec.TIMESTAMP, hint, optional=optional)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            message = self.nested(hint, where, reply)
            return Field(
                name,
                message.name,
                Codec.MESSAGE,
                hint,
                optional=optional,
                message=message,
            )
        if hint in _SCALARS:
            return Field(name, _SCALARS[hint], Codec.SCALAR, hint, optional=optional)
        raise UnsupportedType(f"{where}: {hint!r} has no protobuf mapping")

    def nested(self, cls: type, where: str, reply: bool) -> Message:
        message = Message(
            cls.__name__,
            tuple(self.object_fields(cls, where, reply)),
            doc=_first_paragraph(inspect.getdoc(cls) or ""),
            python_type=cls,
        )
        existing = self.shared.get(cls.__name__)
        if existing is not None:
            # One message per name: a dataclass met in a request and in a reply must
            # look the same in both, which it does unless it holds bytes.
            if existing != message:
                raise UnsupportedType(
                    f"{where}: {cls.__name__} would be two different messages; "
                    "two types share the name, or it holds bytes and is sent both ways"
                )
            return existing
        self.shared[cls.__name__] = message
        return message


def _strip_none(hint: Any, where: str) -> tuple[Any, bool]:
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint, False
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(args) != 1:
        raise UnsupportedType(f"{where}: a union of {args} has no protobuf mapping")
    return args[0], True


def _is_stop(parameter: inspect.Parameter, hint: Any, where: str) -> bool:
    """Whether ``parameter`` is the Event that ends a blocking method's call."""
    if _strip_none(hint, where)[0] is not threading.Event:
        return False
    if parameter.kind is not parameter.KEYWORD_ONLY or parameter.default is not None:
        raise UnsupportedType(
            f"{where}: an Event parameter ({parameter.name}) must be keyword-only and "
            "default to None, so that Python callers need not pass one"
        )
    return True


def _first_paragraph(doc: str) -> str:
    return doc.split("\n\n", 1)[0]
