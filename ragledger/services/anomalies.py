"""Commands on anomalies: acknowledging one, decided on the ledger rather than a read model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.oversight import AnomalyAcknowledged, anomaly_stream
from ragledger.models.oversight import AnomalyRow
from ragledger.services.errors import ConflictError, NotFoundError

# The notifier appends to the same stream; losing that race is retried, since the
# append lock taken by the failed attempt makes the next read current.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An anomaly's recorded acknowledgement."""

    anomaly_id: uuid.UUID
    acknowledged_by: uuid.UUID
    acknowledged_at: datetime
    note: str | None
    position: int


async def acknowledge_anomaly(
    session: AsyncSession,
    *,
    anomaly_id: uuid.UUID,
    actor_id: uuid.UUID,
    note: str | None,
    metadata: EventMetadata,
) -> Acknowledgement:
    """Append AnomalyAcknowledged; NotFoundError if unknown, ConflictError if already done."""
    stream = anomaly_stream(anomaly_id)
    for attempt in range(_ATTEMPTS):
        events = await store.read_stream(session, stream)
        if not events or events[0].event_type != "AnomalyDetected":
            raise NotFoundError("anomaly not found")
        if any(e.event_type == "AnomalyAcknowledged" for e in events):
            raise ConflictError("anomaly already acknowledged")
        try:
            recorded = await store.append(
                session,
                stream,
                [AnomalyAcknowledged(anomaly_id=anomaly_id, acknowledged_by=actor_id, note=note)],
                expected_version=events[-1].stream_version,
                metadata=metadata,
            )
        except WrongExpectedVersionError:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        return Acknowledgement(
            anomaly_id=anomaly_id,
            acknowledged_by=actor_id,
            acknowledged_at=recorded[0].recorded_at,
            note=note,
            position=recorded[0].position,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def inbox_query(
    *,
    rule: str | None = None,
    severity: str | None = None,
    acknowledged: bool | None = None,
    subject: str | None = None,
) -> Select[tuple[AnomalyRow]]:
    """The anomalies inbox, newest first, filtered (the API's list and the console's)."""
    query = select(AnomalyRow).order_by(AnomalyRow.detected_position.desc())
    if rule is not None:
        query = query.where(AnomalyRow.rule == rule)
    if severity is not None:
        query = query.where(AnomalyRow.severity == severity)
    if acknowledged is not None:
        query = query.where(
            AnomalyRow.acknowledged_at.is_not(None)
            if acknowledged
            else AnomalyRow.acknowledged_at.is_(None)
        )
    if subject is not None:
        query = query.where(AnomalyRow.subject == subject)
    return query
