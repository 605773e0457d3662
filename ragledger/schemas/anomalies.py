"""HTTP shapes of anomalies and their acknowledgement."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ragledger.events.anomaly_kinds import Rule, Severity


class AnomalyPublic(BaseModel):
    """An anomaly as admins see it, with its notification and acknowledgement."""

    model_config = ConfigDict(from_attributes=True)

    anomaly_id: uuid.UUID
    rule: Rule
    severity: Severity
    subject: str = Field(description='Whom it is about: "user:<id>", "address:<ip>", ...')
    summary: str
    evidence_positions: list[int] = Field(
        description="Ledger positions of the events that show it (GET /api/v1/audit/events)."
    )
    detected_at: datetime
    detected_position: int
    notified_at: datetime | None
    notification_transport: str | None = Field(
        description="smtp, log (no mail server), grouped (covered by another mail) or none"
    )
    notified_recipients: int | None
    grouped_count: int = Field(description="Earlier anomalies this mail also reported.")
    grouped_into: uuid.UUID | None
    possible_duplicate: bool
    notification_failures: int
    last_notification_error: str | None
    acknowledged_at: datetime | None
    acknowledged_by: uuid.UUID | None
    acknowledgement_note: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def acknowledged(self) -> bool:
        """Whether an admin acknowledged it."""
        return self.acknowledged_at is not None


class AnomalyAcknowledge(BaseModel):
    """An admin acknowledges an anomaly, optionally with a note."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class AnomalyAcknowledgementPublic(BaseModel):
    """The recorded acknowledgement."""

    model_config = ConfigDict(from_attributes=True)

    anomaly_id: uuid.UUID
    acknowledged_by: uuid.UUID
    acknowledged_at: datetime
    note: str | None
    position: int
