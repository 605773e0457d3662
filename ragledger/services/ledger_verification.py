"""Recompute the hash chain from a known point and name the first position that breaks.

Each event stores the exact bytes its hash covers (`events.canonical`, migration 0010),
and the CHECK constraint `ck_events_canonical_matches` ties those bytes to the columns:
PostgreSQL refuses any insert or update whose columns are not, as JSON values, the
event the bytes encode, triggers disabled or not. So when that constraint is in place,
validated, enforced and exactly the expression below (compared with PostgreSQL's own
rendering of it), verifying is hashing the stored bytes: pages arrive as a few
concatenated byte strings (one object per column per page instead of one per row per
column, which is what decoding cost), the links are checked with one comparison per
page, and SHA-256 runs over the bytes in a plain loop. bench/audit.py measures it.

Where the constraint is not in place (dropped, altered, NOT VALID, not enforced), the
stored bytes prove nothing about the columns, so every event is checked row by row as
before migration 0010: its canonical bytes are re-derived from the columns by the
codec and must equal the stored bytes exactly. A page whose fast check fails is read
again row by row the same way, which names the first position that breaks and why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.codec import (
    GENESIS_HASH,
    canonical_json,
    canonical_prefix,
    canonical_suffix,
    format_timestamp,
)

log = structlog.get_logger(__name__)

CONTENT_GUARD = "ck_events_canonical_matches"
# The guard's expression, exactly as migration 0010 installs it.
CANONICAL_MATCHES = """convert_from(canonical, 'UTF8')::jsonb = jsonb_build_object(
    'event_id', event_id, 'event_type', event_type, 'metadata', metadata,
    'payload', payload, 'position', position,
    'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'schema_version', schema_version, 'stream_id', stream_id,
    'stream_version', stream_version)"""

_INSTALLED_GUARD = """
    SELECT pg_get_constraintdef(c.oid), c.convalidated,
           coalesce((to_jsonb(c) ->> 'conenforced')::boolean, true)
    FROM pg_constraint AS c
    WHERE c.conrelid = 'events'::regclass AND c.conname = $1
"""
# PostgreSQL renders the same expression on a throwaway table, so the comparison does
# not depend on how one server version prints casts and parentheses.
_REFERENCE_TABLE = "ragledger_guard_reference"
_REFERENCE_GUARD = f"""
    CREATE TEMPORARY TABLE {_REFERENCE_TABLE} (
        position bigint, event_id uuid, stream_id text, stream_version integer,
        event_type text, schema_version smallint, payload jsonb, metadata jsonb,
        recorded_at timestamptz, canonical bytea,
        CONSTRAINT reference CHECK ({CANONICAL_MATCHES})
    )
"""
_REFERENCE_GUARD_DEF = """
    SELECT pg_get_constraintdef(c.oid) FROM pg_constraint AS c
    WHERE c.conrelid = 'pg_temp.ragledger_guard_reference'::regclass
      AND c.conname = 'reference'
"""

# One page as a handful of values: $1 < position <= $2, at most $3 events. The
# aggregates take the rows in the subquery's order; were they ever not, the page's
# checks fail and it is read again row by row, which decides on its own.
FAST_PAGE_QUERY = """
    SELECT count(*), min(position), max(position),
           string_agg(prev_hash, ''::bytea), string_agg(hash, ''::bytea),
           array_agg(octet_length(canonical)), string_agg(canonical, ''::bytea),
           count(canonical)
    FROM (SELECT position, prev_hash, hash, canonical FROM events
          WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3) AS page
"""
# The row-by-row check reads the columns too (payload and metadata as JSON text).
PAGE_QUERY = """
    SELECT position, event_id, stream_id, stream_version, event_type, schema_version,
           payload::text, metadata::text, recorded_at, prev_hash, hash, canonical
    FROM events
    WHERE position > $1 AND position <= $2
    ORDER BY position
    LIMIT $3
"""
_NO_CEILING = 2**63 - 1
# Rows checked between yields to the event loop, which meanwhile takes the next page
# off the socket (PostgreSQL prepares it while this one is checked) and serves others.
_YIELD_EVERY = 250
# Remembered metadata and stream ids are forgotten past this many: a bound on memory
# over a ledger of any length, far above what one append's events share.
CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """The outcome of a verification run."""

    valid: bool
    checked: int
    head_position: int
    head_hash: bytes
    first_invalid_position: int | None = None
    reason: str | None = None


class StoredEventEncoder:
    """canonical_bytes of events as read back from the ledger, with the JSON as text.

    The bytes are exactly `codec.canonical_bytes` of the same event (tested); the
    encoder only remembers the canonical form of values that recur between events.
    """

    def __init__(self, *, cache_limit: int = CACHE_LIMIT) -> None:
        self._cache_limit = cache_limit
        self._metadata: dict[str, str] = {}
        self._streams: dict[str, str] = {}
        self._moment: datetime | None = None
        self._moment_text = ""

    def canonical(
        self,
        *,
        position: int,
        event_id: UUID,
        stream_id: str,
        stream_version: int,
        event_type: str,
        schema_version: int,
        payload_text: str,
        metadata_text: str,
        recorded_at: datetime,
    ) -> bytes:
        """The canonical bytes of one stored event."""
        metadata_json = self._metadata.get(metadata_text)
        if metadata_json is None:
            if len(self._metadata) >= self._cache_limit:
                self._metadata.clear()
            metadata_json = canonical_json(json.loads(metadata_text))
            self._metadata[metadata_text] = metadata_json
        stream_id_json = self._streams.get(stream_id)
        if stream_id_json is None:
            if len(self._streams) >= self._cache_limit:
                self._streams.clear()
            stream_id_json = json.dumps(stream_id, ensure_ascii=False)
            self._streams[stream_id] = stream_id_json
        if recorded_at != self._moment:
            self._moment = recorded_at
            self._moment_text = format_timestamp(recorded_at)
        return canonical_prefix(
            event_id=event_id,
            event_type=event_type,
            metadata_json=metadata_json,
            payload_json=canonical_json(json.loads(payload_text)),
        ) + canonical_suffix(
            position=position,
            recorded_at_text=self._moment_text,
            schema_version=schema_version,
            stream_id_json=stream_id_json,
            stream_version=stream_version,
        )


def _fault(
    row: Any, expected_position: int, running_hash: bytes, encoder: StoredEventEncoder
) -> str | None:
    """Why a row of PAGE_QUERY does not continue the chain, or None when it does."""
    (
        position,
        event_id,
        stream_id,
        stream_version,
        event_type,
        schema_version,
        payload_text,
        metadata_text,
        recorded_at,
        prev_hash,
        event_hash,
        stored,
    ) = row
    if position != expected_position:
        return f"position {expected_position} is missing (next is {position})"
    if bytes(prev_hash) != running_hash:
        return "prev_hash does not match the previous event's hash"
    canonical = encoder.canonical(
        position=position,
        event_id=event_id,
        stream_id=stream_id,
        stream_version=stream_version,
        event_type=event_type,
        schema_version=schema_version,
        payload_text=payload_text,
        metadata_text=metadata_text,
        recorded_at=recorded_at,
    )
    if hashlib.sha256(running_hash + canonical).digest() != bytes(event_hash):
        return "hash does not match the event's content"
    if stored is None or bytes(stored) != canonical:
        return "the stored canonical bytes do not match the event's content"
    return None


@dataclass(slots=True)
class _Chain:
    """How far the chain has been checked: the last good position and its hash."""

    position: int
    hash: bytes
    checked: int = 0

    def failed(self, reason: str) -> ChainVerification:
        """The outcome when the event after the last good one breaks the chain."""
        return ChainVerification(
            valid=False,
            checked=self.checked,
            head_position=self.position,
            head_hash=self.hash,
            first_invalid_position=self.position + 1,
            reason=reason,
        )


def _continues(page: Any, chain: _Chain) -> bool:
    """Whether a FAST_PAGE_QUERY page continues the chain; advances it if so.

    Positions are unique, so a page of n events from position+1 to position+n has no
    gap. Each prev_hash is the previous event's hash exactly when the page's prev_hash
    column is the running hash followed by all its hashes but the last.
    """
    count, low, high, prev_hashes, hashes, lengths, blob, with_bytes = page
    if low != chain.position + 1 or high != chain.position + count or with_bytes != count:
        return False
    if prev_hashes != chain.hash + hashes[:-32]:
        return False
    sha256 = hashlib.sha256
    running = chain.hash
    computed = []
    offset = 0
    for length in lengths:
        end = offset + length
        running = sha256(running + blob[offset:end]).digest()
        computed.append(running)
        offset = end
    if b"".join(computed) != hashes:
        return False
    chain.position, chain.hash = high, running
    chain.checked += count
    return True


async def _first_fault(driver: Any, chain: _Chain, ceiling: int, limit: int) -> str | None:
    """Check up to `limit` events row by row after the chain's head; the reason it breaks."""
    encoder = StoredEventEncoder()
    rows = await driver.fetch(PAGE_QUERY, chain.position, ceiling, limit)
    for index, row in enumerate(rows, start=1):
        reason = _fault(row, chain.position + 1, chain.hash, encoder)
        if reason is not None:
            return reason
        chain.position, chain.hash = row[0], bytes(row[10])
        chain.checked += 1
        if index % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return None


async def content_guard_intact(driver: Any) -> bool:
    """Whether the CHECK that ties each event's columns to its stored bytes holds for all.

    It must exist, be validated and enforced, and render exactly as the expression
    above renders on this server. Where it cannot be compared (a read-only standby
    cannot create the reference table), it counts as not intact.
    """
    installed = await driver.fetchrow(_INSTALLED_GUARD, CONTENT_GUARD)
    if installed is None or not installed[1] or not installed[2]:
        return False
    try:
        async with driver.transaction():
            await driver.execute(_REFERENCE_GUARD)
            reference = await driver.fetchval(_REFERENCE_GUARD_DEF)
            await driver.execute("DROP TABLE pg_temp.ragledger_guard_reference")
    except Exception as exc:  # noqa: BLE001 - any failure means: check every row instead
        log.warning("ledger.content_guard_unverifiable", error=type(exc).__name__)
        return False
    return bool(installed[0] == reference)


async def _driver(session: AsyncSession) -> Any:
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


async def verify_chain(
    session: AsyncSession,
    *,
    from_position: int = 0,
    from_hash: bytes = GENESIS_HASH,
    up_to: int | None = None,
    batch_size: int = 2000,
    second_reader: AsyncSession | None = None,
) -> ChainVerification:
    """Check every event after `from_position`, trusting `from_hash` as that position's hash.

    An event is valid when its position is the next one (no gap), its prev_hash is the
    previous event's hash, its hash is sha256(prev_hash || canonical_bytes), and its
    columns are what those bytes encode (by the content guard, or row by row where the
    guard is not intact). The first failure stops the run: later hashes build on a
    broken link. With `second_reader` (another session), the fast path reads every
    other page on its connection, so that two PostgreSQL backends prepare pages while
    this process hashes.
    """
    driver = await _driver(session)
    ceiling = _NO_CEILING if up_to is None else up_to
    chain = _Chain(from_position, from_hash)
    if await content_guard_intact(driver):
        drivers = [driver] if second_reader is None else [driver, await _driver(second_reader)]
        top = await driver.fetchval(_TOP_QUERY, ceiling)
        reason = await _check_pages(drivers, chain, top, batch_size)
    else:
        log.warning("ledger.verify_row_by_row", reason="content guard not intact")
        reason = await _check_rows(driver, chain, ceiling, batch_size)
    if reason is not None:
        return chain.failed(reason)
    return ChainVerification(
        valid=True, checked=chain.checked, head_position=chain.position, head_hash=chain.hash
    )


_TOP_QUERY = "SELECT coalesce(max(position), 0) FROM events WHERE position <= $1"


async def _check_pages(drivers: list[Any], chain: _Chain, top: int, batch_size: int) -> str | None:
    """Hash the stored bytes window by window up to `top`; a failing window is decided row by row.

    Windows are fixed ranges of positions, so that each reader can be asked for its next
    one before the current one is checked; one request is in flight per reader. A
    window with a gap fails its check like any other and the row-by-row read names it.
    """
    pending: deque[tuple[Any, int, asyncio.Future[Any]]] = deque()
    after = chain.position

    def ask(driver: Any) -> None:
        nonlocal after
        if after < top:
            end = min(after + batch_size, top)
            page = driver.fetchrow(FAST_PAGE_QUERY, after, end, batch_size)
            pending.append((driver, end, asyncio.ensure_future(page)))
            after = end

    for driver in drivers:
        ask(driver)
    try:
        while pending:
            driver, end, request = pending.popleft()
            page = await request
            ask(driver)
            if _continues(page, chain):
                await asyncio.sleep(0)
                continue
            # Every connection must be free before the row-by-row read.
            await _settle(pending)
            reason = await _first_fault(drivers[0], chain, end, batch_size)
            if reason is None and chain.position < end:
                # Positions are missing up to the window's end: name the gap.
                reason = await _first_fault(drivers[0], chain, top, 1)
            if reason is not None:
                return reason
    finally:
        await _settle(pending)
    return None


async def _settle(pending: deque[tuple[Any, int, asyncio.Future[Any]]]) -> None:
    """Wait until every page in flight has arrived (or failed); keep them for later."""
    if pending:
        await asyncio.wait([future for _, _, future in pending])


async def _check_rows(driver: Any, chain: _Chain, ceiling: int, batch_size: int) -> str | None:
    """Check every event row by row, re-deriving its bytes from the columns."""
    while True:
        before = chain.checked
        reason = await _first_fault(driver, chain, ceiling, batch_size)
        if reason is not None or chain.checked == before:
            return reason
