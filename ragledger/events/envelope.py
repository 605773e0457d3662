"""What goes into the ledger (NewEvent, EventMetadata) and what comes out (RecordedEvent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from ragledger.core.ids import uuid7


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: its type, schema version and JSON payload."""

    event_type: str
    payload: dict[str, Any]
    schema_version: int = 1
    event_id: UUID = field(default_factory=uuid7)


@dataclass(frozen=True, slots=True)
class EventMetadata:
    """Who caused an event and in which request; absent fields are left out of the JSON."""

    actor_id: str | None = None
    actor_role: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The metadata object as stored, without null fields."""
        return {
            name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None
        }


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the ledger holds it; payload is exactly as stored (not upcast)."""

    position: int
    event_id: UUID
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """The last position and its hash (position 0 and the genesis hash when empty)."""

    position: int
    hash: bytes
