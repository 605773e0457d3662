"""Recompute the hash chain from a known point and name the first position that breaks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.codec import (
    GENESIS_HASH,
    HashedFields,
    canonical_bytes,
    canonical_json,
    chain_hash,
)
from ragledger.models.ledger import EventRow

_events = EventRow.__table__


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """The outcome of a verification run."""

    valid: bool
    checked: int
    head_position: int
    head_hash: bytes
    first_invalid_position: int | None = None
    reason: str | None = None


async def verify_chain(
    session: AsyncSession,
    *,
    from_position: int = 0,
    from_hash: bytes = GENESIS_HASH,
    up_to: int | None = None,
    batch_size: int = 2000,
) -> ChainVerification:
    """Check every event after `from_position`, trusting `from_hash` as that position's hash.

    An event is valid when its position is the next one (no gap), its prev_hash is the
    previous event's hash, and its hash is sha256(prev_hash || canonical_bytes). The
    first failure stops the run: later hashes build on a broken link.
    """
    expected_position = from_position + 1
    running_hash = from_hash
    checked = 0
    last_position = from_position
    while True:
        query = (
            select(_events)
            .where(_events.c.position > last_position)
            .order_by(_events.c.position)
            .limit(batch_size)
        )
        if up_to is not None:
            query = query.where(_events.c.position <= up_to)
        rows = (await session.execute(query)).all()
        if not rows:
            break
        for row in rows:
            reason = None
            if row.position != expected_position:
                reason = f"position {expected_position} is missing (next is {row.position})"
            elif bytes(row.prev_hash) != running_hash:
                reason = "prev_hash does not match the previous event's hash"
            else:
                fields = HashedFields(
                    position=row.position,
                    event_id=row.event_id,
                    stream_id=row.stream_id,
                    stream_version=row.stream_version,
                    event_type=row.event_type,
                    schema_version=row.schema_version,
                    recorded_at=row.recorded_at,
                    payload_json=canonical_json(row.payload),
                    metadata_json=canonical_json(row._mapping["metadata"]),
                )
                if chain_hash(running_hash, canonical_bytes(fields)) != bytes(row.hash):
                    reason = "hash does not match the event's content"
            if reason is not None:
                return ChainVerification(
                    valid=False,
                    checked=checked,
                    head_position=last_position,
                    head_hash=running_hash,
                    first_invalid_position=expected_position,
                    reason=reason,
                )
            running_hash = bytes(row.hash)
            last_position = row.position
            expected_position += 1
            checked += 1
    return ChainVerification(
        valid=True, checked=checked, head_position=last_position, head_hash=running_hash
    )
