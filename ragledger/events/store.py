"""The event store: append batches under one lock, read forward, read a stream, the head.

An append is one statement, `ragledger_append` (migration 0007_ledger_append): it takes
a transaction-scoped advisory lock, then reads the head and the streams' versions in
fresh snapshots (READ COMMITTED), so they see the previous appender's commit: positions
are gapless and commit order equals position order. Everything slow (validation, JSON
encoding, the canonical prefix) happens here before the call. In a caller's
transaction the lock lives until that commits, so commit promptly after appending; in
autocommit (`autocommit_sessionmaker`) it is released when the statement ends.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core import metrics
from ragledger.events.codec import (
    GENESIS_HASH,
    canonical_json,
    canonical_prefix,
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
    event: NewEvent
    payload_json: str
    prefix: bytes


# The critical section runs inside PostgreSQL (migration 0007_ledger_append): one
# statement takes the lock, reads the head and the streams' versions, chains the hashes,
# inserts the batch and queues the NOTIFY (delivered at commit, so a woken subscriber
# finds the rows). In autocommit the lock is released when the statement ends.
_APPEND = text(
    """
    SELECT out_position, out_stream_version, out_recorded_at, out_prev_hash, out_hash,
           out_conflict_stream
    FROM ragledger_append(
        CAST(:streams AS text[]), CAST(:stream_json AS text[]), CAST(:expected AS integer[]),
        CAST(:stream_index AS integer[]), CAST(:event_ids AS uuid[]),
        CAST(:event_types AS text[]), CAST(:schema_versions AS smallint[]),
        CAST(:payloads AS jsonb[]), CAST(:prefixes AS bytea[]), CAST(:metadata AS jsonb),
        :channel)
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
    streams = sorted({p.stream_id for p in prepared})
    stream_index = {sid: n for n, sid in enumerate(streams, start=1)}
    expected: dict[str, int | None] = dict.fromkeys(streams)
    for batch in batches:
        if batch.expected_version is None:
            continue
        if expected[batch.stream_id] not in (None, batch.expected_version):
            raise ValueError(f"conflicting expected versions for stream {batch.stream_id!r}")
        expected[batch.stream_id] = batch.expected_version

    rows = (
        await session.execute(
            _APPEND,
            {
                "streams": streams,
                "stream_json": [json.dumps(sid, ensure_ascii=False) for sid in streams],
                "expected": [expected[sid] for sid in streams],
                "stream_index": [stream_index[p.stream_id] for p in prepared],
                "event_ids": [p.event.event_id for p in prepared],
                "event_types": [p.event.event_type for p in prepared],
                "schema_versions": [p.event.schema_version for p in prepared],
                "payloads": [p.payload_json for p in prepared],
                "prefixes": [p.prefix for p in prepared],
                "metadata": metadata_json,
                "channel": NOTIFY_CHANNEL,
            },
        )
    ).all()
    if rows and rows[0].out_conflict_stream is not None:
        conflict = rows[0].out_conflict_stream
        raise WrongExpectedVersionError(conflict, expected[conflict], rows[0].out_stream_version)
    if len(rows) != len(prepared):  # pragma: no cover  (the database would have raised)
        raise RuntimeError(f"appended {len(rows)} of {len(prepared)} events")
    recorded = [
        RecordedEvent(
            position=row.out_position,
            event_id=item.event.event_id,
            stream_id=item.stream_id,
            stream_version=row.out_stream_version,
            event_type=item.event.event_type,
            schema_version=item.event.schema_version,
            payload=item.event.payload,
            metadata=metadata_value,
            recorded_at=row.out_recorded_at,
            prev_hash=bytes(row.out_prev_hash),
            hash=bytes(row.out_hash),
        )
        for item, row in zip(prepared, rows, strict=True)
    ]
    for item in prepared:
        metrics.ledger_appends.labels(item.event.event_type).inc()
    return recorded


async def append_autocommitted(
    sessionmaker: async_sessionmaker[AsyncSession],
    stream_id: str,
    events: Sequence[Any],
    *,
    expected_version: int | None = None,
    metadata: EventMetadata | None = None,
) -> list[RecordedEvent]:
    """Append on a connection of its own, in autocommit: durable when this returns.

    The append lock is released when the statement ends, with no round trip to this
    process inside it; for appends that need no other write in the same transaction
    (the answer flow's events, security events), so a busy event loop never holds up
    other appenders.
    """
    async with sessionmaker() as session:
        return await commit_then_append(
            session, stream_id, events, expected_version=expected_version, metadata=metadata
        )


async def commit_then_append(
    session: AsyncSession,
    stream_id: str,
    events: Sequence[Any],
    *,
    expected_version: int | None = None,
    metadata: EventMetadata | None = None,
) -> list[RecordedEvent]:
    """Commit the session's transaction, then append in autocommit; see append_autocommitted.

    For a request whose last act is recording what it did (a search, an audit read):
    its reads end with the commit, and the append is durable when this returns.
    """
    await session.commit()
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return await append(
        session, stream_id, events, expected_version=expected_version, metadata=metadata
    )


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


@functools.cache
def _read_all_query(*, bounded: bool, typed: bool, one_stream: bool) -> Select[Any]:
    # Built once per shape: subscribers read after every append, and building the
    # statement anew cost more than running it.
    query = select(*EVENT_COLUMNS).where(_events.c.position > bindparam("after"))
    if bounded:
        query = query.where(_events.c.position <= bindparam("up_to"))
    if typed:
        query = query.where(_events.c.event_type.in_(bindparam("types", expanding=True)))
    if one_stream:
        query = query.where(_events.c.stream_id == bindparam("stream_id"))
    return query.order_by(_events.c.position).limit(bindparam("limit"))


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
    query = _read_all_query(
        bounded=up_to is not None, typed=event_types is not None, one_stream=stream_id is not None
    )
    params: dict[str, Any] = {"after": after, "limit": limit}
    if up_to is not None:
        params["up_to"] = up_to
    if event_types is not None:
        params["types"] = sorted(event_types)
    if stream_id is not None:
        params["stream_id"] = stream_id
    result = await session.execute(query, params)
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
