"""Turn event dataclasses into JSON payloads and back, driven by their type hints."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import datetime
from functools import cache
from typing import Any, cast
from uuid import UUID


def to_json_value(value: Any) -> Any:
    """A dataclass, UUID, datetime, enum, tuple or plain value as a JSON value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        from ragledger.events.codec import format_timestamp

        return format_timestamp(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple | frozenset | set):
        items = [to_json_value(item) for item in value]
        return sorted(items) if isinstance(value, frozenset | set) else items
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    # Floats and anything else are left for the codec to refuse with a clear message.
    return value


def to_payload(event: Any) -> dict[str, Any]:
    """The JSON payload of an event dataclass."""
    if not dataclasses.is_dataclass(event) or isinstance(event, type):
        raise TypeError(f"{type(event).__name__} is not an event dataclass")
    payload = to_json_value(event)
    assert isinstance(payload, dict)
    return payload


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_payload[T](cls: type[T], data: dict[str, Any]) -> T:
    """Build an event dataclass from its payload; unknown keys are an error."""
    hints = _hints(cast("type", cls))
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown payload fields {sorted(unknown)}")
    kwargs = {name: _from_json(hints[name], data[name]) for name in names if name in data}
    return cls(**kwargs)


def _from_json(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                return _from_json(arg, value)
    if origin is tuple:
        item_hint = args[0] if args else Any
        return tuple(_from_json(item_hint, item) for item in value)
    if origin is list:
        return [_from_json(args[0] if args else Any, item) for item in value]
    if origin is frozenset:
        return frozenset(_from_json(args[0] if args else Any, item) for item in value)
    if origin is dict:
        value_hint = args[1] if len(args) == 2 else Any
        return {key: _from_json(value_hint, item) for key, item in value.items()}
    if hint is UUID:
        return UUID(value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_payload(hint, value)
    return value
