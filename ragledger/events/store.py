"""The event store: append batches under one lock, read forward, read a stream, the head.

Appends are serialised by a transaction-scoped advisory lock, taken in its own
statement before the head is read: in READ COMMITTED every later statement then sees
the previous appender's commit, so positions are gapless and commit order equals
position order. Everything slow (validation, JSON encoding) happens before the lock;
the caller must commit promptly after appending, since the lock lives until then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.codec import (
    GENESIS_HASH,
    HashedFields,
    canonical_bytes,
    canonical_json,
    chain_hash,
    check_json_value,
)
from ragledger.events.envelope import EventMetadata, LedgerHead, NewEvent, RecordedEvent
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.registry import registry
from ragledger.models.ledger import EventRow

# Advisory lock keys: (namespace, id). The namespace is ASCII "RL" so that other users of
# advisory locks in the same database are unlikely to collide with ours.
LOCK_NAMESPACE = 0x524C
APPEND_LOCK_ID = 1
NOTIFY_CHANNEL = "ragledger_events"

NO_STREAM = 0
"""expected_version for a stream that must not exist yet."""

_events = EventRow.__table__


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at `expected_version`."""

    stream_id: str
    events: Sequence[Any]
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    stream_id: str
    expected_version: int | None
    event: NewEvent
    payload_json: str


async def append(
    session: AsyncSession,
    stream_id: str,
    events: Sequence[Any],
    *,
    expected_version: int | None = None,
    metadata: EventMetadata | None = None,
) -> list[RecordedEvent]:
    """Append events (dataclasses or NewEvent) to one stream; see append_many."""
    return await append_many(
        session, [StreamAppend(stream_id, events, expected_version)], metadata=metadata
    )


async def append_many(
    session: AsyncSession,
    batches: Sequence[StreamAppend],
    *,
    metadata: EventMetadata | None = None,
) -> list[RecordedEvent]:
    """Append several streams' events atomically, in order, in the session's transaction.

    `expected_version` None means "whatever version", NO_STREAM (0) means "must be new",
    N means "must be at N". A mismatch raises WrongExpectedVersionError and writes nothing.
    A payload that cannot be stored raises CanonicalEncodingError before the lock.
    """
    metadata_json_value = (metadata or EventMetadata()).to_json()
    check_json_value(metadata_json_value, "metadata")
    metadata_json = canonical_json(metadata_json_value)
    prepared: list[_Prepared] = []
    for batch in batches:
        if not batch.stream_id or "\x00" in batch.stream_id:
            raise ValueError("stream_id must be a non-empty string without NUL")
        for item in batch.events:
            new = registry.to_new_event(item)
            check_json_value(new.payload, f"{new.event_type}.payload")
            check_json_value(new.event_type, "event_type")
            prepared.append(
                _Prepared(batch.stream_id, batch.expected_version, new, canonical_json(new.payload))
            )
    if not prepared:
        return []

    # The critical section starts here.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :id)"),
        {"ns": LOCK_NAMESPACE, "id": APPEND_LOCK_ID},
    )
    head_row = (
        await session.execute(
            text(
                "SELECT h.position, h.hash, clock_timestamp() AS now "
                "FROM (SELECT 1) AS one LEFT JOIN LATERAL "
                "(SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS h ON true"
            )
        )
    ).one()
    position = head_row.position or 0
    prev_hash = bytes(head_row.hash) if head_row.hash is not None else GENESIS_HASH
    recorded_at = head_row.now

    stream_ids = sorted({p.stream_id for p in prepared})
    current = dict(
        (
            await session.execute(
                select(_events.c.stream_id, func.max(_events.c.stream_version))
                .where(_events.c.stream_id.in_(stream_ids))
                .group_by(_events.c.stream_id)
            )
        ).all()
    )
    versions: dict[str, int] = {sid: current.get(sid, 0) for sid in stream_ids}
    for batch in batches:
        if (
            batch.expected_version is not None
            and versions[batch.stream_id] != batch.expected_version
        ):
            raise WrongExpectedVersionError(
                batch.stream_id, batch.expected_version, versions[batch.stream_id]
            )

    rows: list[dict[str, Any]] = []
    recorded: list[RecordedEvent] = []
    for item in prepared:
        position += 1
        versions[item.stream_id] += 1
        fields = HashedFields(
            position=position,
            event_id=item.event.event_id,
            stream_id=item.stream_id,
            stream_version=versions[item.stream_id],
            event_type=item.event.event_type,
            schema_version=item.event.schema_version,
            recorded_at=recorded_at,
            payload_json=item.payload_json,
            metadata_json=metadata_json,
        )
        digest = chain_hash(prev_hash, canonical_bytes(fields))
        rows.append(
            {
                "position": position,
                "event_id": item.event.event_id,
                "stream_id": item.stream_id,
                "stream_version": fields.stream_version,
                "event_type": item.event.event_type,
                "schema_version": item.event.schema_version,
                "payload": item.event.payload,
                "metadata": metadata_json_value,
                "recorded_at": recorded_at,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        recorded.append(
            RecordedEvent(
                position=position,
                event_id=item.event.event_id,
                stream_id=item.stream_id,
                stream_version=fields.stream_version,
                event_type=item.event.event_type,
                schema_version=item.event.schema_version,
                payload=item.event.payload,
                metadata=metadata_json_value,
                recorded_at=recorded_at,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash = digest
    await session.execute(insert(_events), rows)
    # Delivered at commit, so a woken subscriber finds the rows.
    await session.execute(
        text("SELECT pg_notify(:channel, :position)"),
        {"channel": NOTIFY_CHANNEL, "position": str(position)},
    )
    return recorded


def _to_recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=row.position,
        event_id=row.event_id,
        stream_id=row.stream_id,
        stream_version=row.stream_version,
        event_type=row.event_type,
        schema_version=row.schema_version,
        payload=row.payload,
        metadata=row._mapping["metadata"],
        recorded_at=row.recorded_at,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
    )


async def read_all(
    session: AsyncSession,
    *,
    after: int = 0,
    limit: int = 1000,
    event_types: Iterable[str] | None = None,
    stream_id: str | None = None,
    up_to: int | None = None,
) -> list[RecordedEvent]:
    """Events with position > `after` (and <= `up_to`), in position order, at most `limit`."""
    query = select(_events).where(_events.c.position > after).order_by(_events.c.position)
    if up_to is not None:
        query = query.where(_events.c.position <= up_to)
    if event_types is not None:
        query = query.where(_events.c.event_type.in_(sorted(event_types)))
    if stream_id is not None:
        query = query.where(_events.c.stream_id == stream_id)
    result = await session.execute(query.limit(limit))
    return [_to_recorded(row) for row in result]


async def read_stream(
    session: AsyncSession, stream_id: str, *, from_version: int = 1
) -> list[RecordedEvent]:
    """Every event of one stream from `from_version`, in version order."""
    result = await session.execute(
        select(_events)
        .where(_events.c.stream_id == stream_id, _events.c.stream_version >= from_version)
        .order_by(_events.c.stream_version)
    )
    return [_to_recorded(row) for row in result]


async def stream_version(session: AsyncSession, stream_id: str) -> int:
    """The stream's current version (0 when it has no events)."""
    value = await session.scalar(
        select(func.max(_events.c.stream_version)).where(_events.c.stream_id == stream_id)
    )
    return int(value or 0)


async def head(session: AsyncSession) -> LedgerHead:
    """The last appended position and its hash."""
    row = (
        await session.execute(
            select(_events.c.position, _events.c.hash).order_by(_events.c.position.desc()).limit(1)
        )
    ).first()
    if row is None:
        return LedgerHead(0, GENESIS_HASH)
    return LedgerHead(row.position, bytes(row.hash))
