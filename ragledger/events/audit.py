"""Audit events: auditors are audited too (what they read, what they took away).

An auditor's reads and exports are the stream `audit-<auditor id>`. Filter values are
recorded as given, as tuples of strings, so that an anomaly rule can compare reads
without knowing each view's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ragledger.events.registry import event_type


def audit_stream(auditor_id: UUID) -> str:
    """The stream of one auditor's (or admin's) audit reads and exports."""
    return f"audit-{auditor_id}"


@event_type
@dataclass(frozen=True, slots=True)
class AuditViewed:
    """An auditor read an audit view: which one, with which filters, and how much came back.

    `view` is `events`, `answers`, `answer`, `document_history` or (the console's
    integrity page: head and signed digests) `integrity`; `target_id` is the
    question or document a single-item view was about (None for lists).
    """

    auditor_id: UUID
    view: str
    filters: dict[str, tuple[str, ...]]
    item_count: int
    target_id: str | None = None


@event_type
@dataclass(frozen=True, slots=True)
class AuditExported:
    """A range of the ledger was exported, closed by a signed digest of its last event.

    Who exported it is the event's metadata (`actor_id`); `digest_hash` is hex.
    """

    from_position: int
    to_position: int
    event_count: int
    digest_position: int
    digest_hash: str
