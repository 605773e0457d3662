"""Event types by name and schema version, and the upcasters that lift old payloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragledger.events.envelope import NewEvent, RecordedEvent
from ragledger.events.payloads import from_payload, to_payload

type Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventTypeError(LookupError):
    """The ledger holds an event type this code does not know."""


@dataclass(frozen=True, slots=True)
class EventType:
    """A registered event class with its name and current schema version."""

    name: str
    version: int
    cls: type


class EventRegistry:
    """Maps event names to classes (current version) and holds upcasters for older ones."""

    def __init__(self) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_class: dict[type, EventType] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register[T: type](self, cls: T, *, name: str | None = None, version: int = 1) -> T:
        """Register an event dataclass under its name (default: the class name)."""
        event_name = name or cls.__name__
        existing = self._by_name.get(event_name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"event type {event_name!r} is already registered")
        entry = EventType(event_name, version, cls)
        self._by_name[event_name] = entry
        self._by_class[cls] = entry
        return cls

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate a function that lifts `name`'s payload from `from_version` by one."""

        def decorate(func: Upcaster) -> Upcaster:
            self._upcasters[(name, from_version)] = func
            return func

        return decorate

    def get(self, name: str) -> EventType:
        """The registered type for `name`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventTypeError(name) from None

    def names(self) -> frozenset[str]:
        """Every registered event name."""
        return frozenset(self._by_name)

    def to_new_event(self, event: Any) -> NewEvent:
        """Wrap an event dataclass for appending."""
        if isinstance(event, NewEvent):
            return event
        try:
            entry = self._by_class[type(event)]
        except KeyError:
            raise UnknownEventTypeError(type(event).__name__) from None
        return NewEvent(
            event_type=entry.name, payload=to_payload(event), schema_version=entry.version
        )

    def upcast(self, name: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
        """Lift a stored payload to the current schema version."""
        entry = self.get(name)
        version = schema_version
        while version < entry.version:
            try:
                step = self._upcasters[(name, version)]
            except KeyError:
                raise UnknownEventTypeError(
                    f"no upcaster for {name} v{version} -> v{version + 1}"
                ) from None
            payload = step(payload)
            version += 1
        if version > entry.version:
            raise UnknownEventTypeError(
                f"{name} v{version} is newer than this code (v{entry.version})"
            )
        return payload

    def decode(self, recorded: RecordedEvent) -> Any:
        """The domain event of a recorded one, upcast to the current schema."""
        entry = self.get(recorded.event_type)
        payload = self.upcast(recorded.event_type, recorded.schema_version, recorded.payload)
        return from_payload(entry.cls, payload)


registry = EventRegistry()


def event_type[T: type](cls: T | None = None, *, name: str | None = None, version: int = 1) -> Any:
    """Class decorator registering an event dataclass in the global registry."""

    def decorate(inner: T) -> T:
        return registry.register(inner, name=name, version=version)

    return decorate(cls) if cls is not None else decorate
