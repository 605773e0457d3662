"""The event store: append batches under one lock, read forward, read a stream, the head.

Appends are serialised by a transaction-scoped advisory lock, taken in its own
statement before the head is read: in READ COMMITTED every later statement then sees
the previous appender's commit, so positions are gapless and commit order equals
position order. Everything slow (validation, JSON encoding) happens before the lock;
the caller must commit promptly after appending, since the lock lives until then.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core import metrics
from ragledger.events.codec import (
    GENESIS_HASH,
    canonical_json,
    canonical_prefix,
    canonical_suffix,
    check_json_value,
    format_timestamp,
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
_LOCK = text("SELECT pg_advisory_xact_lock(:ns, :id)")
_LOCK_PARAMS = {"ns": LOCK_NAMESPACE, "id": APPEND_LOCK_ID}


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at `expected_version`."""

    stream_id: str
    events: Sequence[Any]
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    stream_id: str
    event: NewEvent
    payload_json: str
    prefix: bytes


# Head, database clock and each stream's current version in one round trip. The
# per-stream max() is a correlated subquery so that PostgreSQL reads one entry of the
# (stream_id, stream_version) index per stream, however long the stream is.
_HEAD_AND_VERSIONS = text(
    """
    SELECT h.position, h.hash, clock_timestamp() AS now,
           ARRAY(
               SELECT coalesce(
                   (SELECT max(e.stream_version) FROM events AS e WHERE e.stream_id = u.sid), 0)
               FROM unnest(CAST(:stream_ids AS text[])) WITH ORDINALITY AS u(sid, ord)
               ORDER BY u.ord
           ) AS versions
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT position, hash FROM events ORDER BY position DESC LIMIT 1
    ) AS h ON true
    """
)

# The whole batch in one statement (arrays, not one row per parameter set), and the
# NOTIFY with it: PostgreSQL delivers it at commit, so a woken subscriber finds the rows.
_INSERT_AND_NOTIFY = text(
    """
    WITH inserted AS (
        INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                            schema_version, payload, metadata, recorded_at, prev_hash, hash)
        SELECT u.position, u.event_id, u.stream_id, u.stream_version, u.event_type,
               u.schema_version, u.payload, CAST(:metadata AS jsonb), :recorded_at,
               u.prev_hash, u.hash
        FROM unnest(
            CAST(:positions AS bigint[]), CAST(:event_ids AS uuid[]),
            CAST(:stream_ids AS text[]), CAST(:stream_versions AS integer[]),
            CAST(:event_types AS text[]), CAST(:schema_versions AS smallint[]),
            CAST(:payloads AS jsonb[]), CAST(:prev_hashes AS bytea[]), CAST(:hashes AS bytea[])
        ) AS u(position, event_id, stream_id, stream_version, event_type, schema_version,
               payload, prev_hash, hash)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM inserted) AS inserted, pg_notify(:channel, :head)
    """
)


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
    metadata_value = (metadata or EventMetadata()).to_json()
    check_json_value(metadata_value, "metadata")
    metadata_json = canonical_json(metadata_value)
    prepared: list[_Prepared] = []
    for batch in batches:
        if not batch.stream_id or "\x00" in batch.stream_id:
            raise ValueError("stream_id must be a non-empty string without NUL")
        check_json_value(batch.stream_id, "stream_id")
        for item in batch.events:
            new = registry.to_new_event(item)
            check_json_value(new.event_type, "event_type")
            check_json_value(new.payload, f"{new.event_type}.payload")
            payload_json = canonical_json(new.payload)
            prefix = canonical_prefix(
                event_id=new.event_id,
                event_type=new.event_type,
                metadata_json=metadata_json,
                payload_json=payload_json,
            )
            prepared.append(_Prepared(batch.stream_id, new, payload_json, prefix))
    if not prepared:
        return []
    stream_ids = sorted({p.stream_id for p in prepared})
    stream_id_json = {sid: json.dumps(sid, ensure_ascii=False) for sid in stream_ids}

    # The critical section starts here. The lock is its own statement: in READ COMMITTED
    # the next statement's snapshot is taken after the lock, so it sees the previous
    # appender's commit.
    await session.execute(_LOCK, _LOCK_PARAMS)
    head_row = (await session.execute(_HEAD_AND_VERSIONS, {"stream_ids": stream_ids})).one()
    position = head_row.position or 0
    prev_hash = bytes(head_row.hash) if head_row.hash is not None else GENESIS_HASH
    recorded_at = head_row.now
    recorded_at_text = format_timestamp(recorded_at)
    versions = dict(zip(stream_ids, head_row.versions, strict=True))
    for batch in batches:
        if (
            batch.expected_version is not None
            and versions[batch.stream_id] != batch.expected_version
        ):
            raise WrongExpectedVersionError(
                batch.stream_id, batch.expected_version, versions[batch.stream_id]
            )

    columns: dict[str, list[Any]] = {
        "positions": [],
        "event_ids": [],
        "stream_ids": [],
        "stream_versions": [],
        "event_types": [],
        "schema_versions": [],
        "payloads": [],
        "prev_hashes": [],
        "hashes": [],
    }
    recorded: list[RecordedEvent] = []
    for item in prepared:
        position += 1
        version = versions[item.stream_id] + 1
        versions[item.stream_id] = version
        digest = hashlib.sha256(prev_hash)
        digest.update(item.prefix)
        digest.update(
            canonical_suffix(
                position=position,
                recorded_at_text=recorded_at_text,
                schema_version=item.event.schema_version,
                stream_id_json=stream_id_json[item.stream_id],
                stream_version=version,
            )
        )
        event_hash = digest.digest()
        columns["positions"].append(position)
        columns["event_ids"].append(item.event.event_id)
        columns["stream_ids"].append(item.stream_id)
        columns["stream_versions"].append(version)
        columns["event_types"].append(item.event.event_type)
        columns["schema_versions"].append(item.event.schema_version)
        columns["payloads"].append(item.payload_json)
        columns["prev_hashes"].append(prev_hash)
        columns["hashes"].append(event_hash)
        recorded.append(
            RecordedEvent(
                position=position,
                event_id=item.event.event_id,
                stream_id=item.stream_id,
                stream_version=version,
                event_type=item.event.event_type,
                schema_version=item.event.schema_version,
                payload=item.event.payload,
                metadata=metadata_value,
                recorded_at=recorded_at,
                prev_hash=prev_hash,
                hash=event_hash,
            )
        )
        prev_hash = event_hash
    inserted = await session.scalar(
        _INSERT_AND_NOTIFY,
        {
            **columns,
            "metadata": metadata_json,
            "recorded_at": recorded_at,
            "channel": NOTIFY_CHANNEL,
            "head": str(position),
        },
    )
    if inserted != len(prepared):  # pragma: no cover  (the database would have raised)
        raise RuntimeError(f"appended {inserted} of {len(prepared)} events")
    for item in prepared:
        metrics.ledger_appends.labels(item.event.event_type).inc()
    return recorded


EVENT_COLUMNS = (
    _events.c.position,
    _events.c.event_id,
    _events.c.stream_id,
    _events.c.stream_version,
    _events.c.event_type,
    _events.c.schema_version,
    _events.c.payload,
    _events.c.metadata,
    _events.c.recorded_at,
    _events.c.prev_hash,
    _events.c.hash,
)


def to_recorded(row: Any) -> RecordedEvent:
    """A row of EVENT_COLUMNS as a RecordedEvent."""
    # Positional access: reads convert every row, and names cost a lookup each.
    (position, event_id, stream_id, version, event_type, schema, payload, meta, at, prev, hsh) = row
    return RecordedEvent(
        position=position,
        event_id=event_id,
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema,
        payload=payload,
        metadata=meta,
        recorded_at=at,
        prev_hash=bytes(prev),
        hash=bytes(hsh),
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
    query = select(*EVENT_COLUMNS).where(_events.c.position > after).order_by(_events.c.position)
    if up_to is not None:
        query = query.where(_events.c.position <= up_to)
    if event_types is not None:
        query = query.where(_events.c.event_type.in_(sorted(event_types)))
    if stream_id is not None:
        query = query.where(_events.c.stream_id == stream_id)
    result = await session.execute(query.limit(limit))
    return [to_recorded(row) for row in result]


async def read_stream(
    session: AsyncSession, stream_id: str, *, from_version: int = 1
) -> list[RecordedEvent]:
    """Every event of one stream from `from_version`, in version order."""
    result = await session.execute(
        select(*EVENT_COLUMNS)
        .where(_events.c.stream_id == stream_id, _events.c.stream_version >= from_version)
        .order_by(_events.c.stream_version)
    )
    return [to_recorded(row) for row in result]


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
