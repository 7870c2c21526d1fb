"""Messages to keyword arguments and return values to messages, driven by the schema.

Nothing here knows a particular method: the field descriptions of ``schema`` say which
Python type each field holds, so a new method of the Scheduler needs no code here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from ..errors import BadRequest, shown
from .schema import Codec, Field, Message, ReplyShape, Rpc


def request_kwargs(rpc: Rpc, request: ProtoMessage) -> dict[str, Any]:
    """The arguments of ``rpc``'s method; a parameter left out keeps its default."""
    defaults = {p.name for p in rpc.parameters if p.has_default}
    return _read_fields(rpc.request, request, defaults)


def fill_response(rpc: Rpc, value: Any, response: ProtoMessage) -> ProtoMessage:
    """Set the fields of ``response`` from what ``rpc``'s method returned."""
    if rpc.reply_shape is ReplyShape.OBJECT:
        _write_fields(rpc.response.fields, value, response)
    elif rpc.reply_shape is ReplyShape.STRING_WITH_ATTRIBUTES:
        value_field, *attributes = rpc.response.fields
        _write(value_field, str(value), response)
        _write_fields(attributes, value, response)
    elif rpc.reply_shape is ReplyShape.VALUE:
        _write(rpc.response.fields[0], value, response)
    return response


def _read_fields(
    spec: Message, message: ProtoMessage, defaults: Iterable[str] = ()
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in spec.fields:
        raw = getattr(message, field.name)
        if field.repeated:
            values[field.name] = [_read(field, item) for item in raw]
        elif _has_presence(field) and not message.HasField(field.name):
            if field.name in defaults:
                continue
            if not field.optional:
                raise BadRequest(f"{field.name} is required")
            values[field.name] = None
        else:
            values[field.name] = _read(field, raw)
    return values


def _has_presence(field: Field) -> bool:
    return field.optional or field.codec in (Codec.TIMESTAMP, Codec.MESSAGE)


def _read(field: Field, raw: Any) -> Any:
    if field.codec is Codec.ENUM:
        try:
            return field.python_type(raw)
        except ValueError:
            raise BadRequest(
                f"{field.name} {shown(raw)} is not valid; {field.comment}"
            ) from None
    if field.codec is Codec.TIMESTAMP:
        return raw.ToDatetime(tzinfo=dt.UTC)
    if field.codec is Codec.MESSAGE:
        assert field.message is not None
        return field.python_type(**_read_fields(field.message, raw))
    return raw


def _write_fields(fields: Iterable[Field], value: Any, message: ProtoMessage) -> None:
    for field in fields:
        _write(field, getattr(value, field.name), message)


def _write(field: Field, value: Any, message: ProtoMessage) -> None:
    if value is None:
        return  # absent: the field's presence says "unset"
    if field.repeated:
        container = getattr(message, field.name)
        for item in value:
            if field.codec is Codec.MESSAGE:
                assert field.message is not None
                _write_fields(field.message.fields, item, container.add())
            elif field.codec is Codec.TIMESTAMP:
                container.add().FromDatetime(item)
            else:
                container.append(_scalar(field, item))
    elif field.codec is Codec.MESSAGE:
        assert field.message is not None
        target = getattr(message, field.name)
        target.SetInParent()
        _write_fields(field.message.fields, value, target)
    elif field.codec is Codec.TIMESTAMP:
        getattr(message, field.name).FromDatetime(value)
    else:
        setattr(message, field.name, _scalar(field, value))


def _scalar(field: Field, value: Any) -> Any:
    if field.codec is Codec.ENUM:
        return str(value.value if hasattr(value, "value") else value)
    return value
