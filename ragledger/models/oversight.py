"""Oversight tables: the `anomalies` read model and the two reactors' own state.

The reactors' state tables (`anomaly_detector_*`, `notifier_*`) are written in the same
transaction as the reactor's checkpoint, so they always agree with what the reactor
has consumed; they are not projections and a rebuild never touches them.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, Integer, Text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from ragledger.models.base import Base


class AnomalyRow(Base):
    """One anomaly with where its notification and acknowledgement stand."""

    __tablename__ = "anomalies"

    anomaly_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    rule: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    evidence_positions: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detected_position: Mapped[int] = mapped_column(BigInteger)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    notification_transport: Mapped[str | None] = mapped_column(Text, nullable=True)
    notified_recipients: Mapped[int | None] = mapped_column(Integer, nullable=True)
    grouped_count: Mapped[int] = mapped_column(Integer, default=0)
    grouped_into: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    notification_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_notification_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    acknowledgement_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_position: Mapped[int] = mapped_column(BigInteger)


class DetectorSignalRow(Base):
    """A fact the detector's windowed rules count (a question, a failure, an audit read)."""

    __tablename__ = "anomaly_detector_signals"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(BigInteger, default=1)


class DetectorRaisedRow(Base):
    """When a rule last raised an anomaly about a subject, and what it held back since."""

    __tablename__ = "anomaly_detector_raised"

    rule: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    last_raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_anomaly_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    suppressed: Mapped[int] = mapped_column(Integer, default=0)


class NotifierWindowRow(Base):
    """The last mail about a rule and subject, and how many anomalies were grouped since."""

    __tablename__ = "notifier_mail_windows"

    rule: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    last_sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_anomaly_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    grouped_since: Mapped[int] = mapped_column(Integer, default=0)


class NotifierAttemptRow(Base):
    """A send in flight or failed, committed before the SMTP conversation starts.

    It outlives a crash between the server's acceptance and the commit: the next attempt
    then knows that the mail may already have been delivered.
    """

    __tablename__ = "notifier_attempts"

    anomaly_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    failure_recorded: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
