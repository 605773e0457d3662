"""The ledger's tables: the append-only events, content-addressed blobs, checkpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from ragledger.models.base import Base


class EventRow(Base):
    """One immutable event; UPDATE, DELETE and TRUNCATE are refused by a trigger."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("stream_id", "stream_version"),
        Index("ix_events_event_type_position", "event_type", "position"),
        Index("ix_events_stream_id_position", "stream_id", "position"),
    )

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    stream_id: Mapped[str] = mapped_column(Text)
    stream_version: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[int] = mapped_column(SmallInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    event_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    prev_hash: Mapped[bytes] = mapped_column(BYTEA)
    hash: Mapped[bytes] = mapped_column(BYTEA)
    # The exact bytes hashed (migration 0010); a CHECK ties them to the columns above.
    # Deferred: only verification reads them.
    canonical: Mapped[bytes] = mapped_column(BYTEA, deferred=True)


class BlobRow(Base):
    """Bytes stored once under their SHA-256; events carry the hash, never the bytes."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SubscriberCheckpoint(Base):
    """How far one projection or reactor has consumed the ledger."""

    __tablename__ = "subscriber_checkpoints"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failing_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
