"""Responses built from a question's provenance, shared by the asker's and the audit routes."""

from __future__ import annotations

from typing import Any

from ragledger.events.envelope import RecordedEvent
from ragledger.schemas.provenance import LedgerRef, ProvenancePublic
from ragledger.services.provenance import Provenance


def ledger_ref(event: RecordedEvent) -> LedgerRef:
    """A reference to a ledger event, without its payload."""
    return LedgerRef(
        position=event.position,
        event_type=event.event_type,
        stream_id=event.stream_id,
        recorded_at=event.recorded_at,
        hash=event.hash.hex(),
    )


def provenance_fields(provenance: Provenance) -> dict[str, Any]:
    """The fields of `ProvenancePublic`, validated from the ledger's account of a question.

    Each response model built on `ProvenancePublic` takes these and adds its own.
    """
    return dict(ProvenancePublic.model_validate(provenance))
