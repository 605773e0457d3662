"""Recompute the hash chain from a known point and name the first position that breaks.

The cost of verifying is re-deriving each event's canonical bytes from what PostgreSQL
stores (JSONB keeps its own key order and spacing, so payload and metadata are parsed
and written again) and reading the rows, not SHA-256: bench/audit.py measures all
three. So the rows are read by the driver itself, with payload and metadata as JSON
text; the next page is read while this one is checked; and what repeats from one event
to the next is canonicalised once (every event of an append shares its metadata and its
`recorded_at`, and streams recur).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.codec import (
    GENESIS_HASH,
    canonical_json,
    canonical_prefix,
    canonical_suffix,
    chain_hash,
    format_timestamp,
)

# SQLAlchemy's result layer costs more per row than the driver's whole read (measured
# in bench/audit.py), and a verification reads every row of the ledger: the page is read
# with asyncpg directly, on the session's own connection. $1 < position <= $2, $3 rows.
PAGE_QUERY = """
    SELECT position, event_id, stream_id, stream_version, event_type, schema_version,
           payload::text, metadata::text, recorded_at, prev_hash, hash
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
_CACHE_LIMIT = 4096


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

    def __init__(self) -> None:
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
            if len(self._metadata) >= _CACHE_LIMIT:
                self._metadata.clear()
            metadata_json = canonical_json(json.loads(metadata_text))
            self._metadata[metadata_text] = metadata_json
        stream_id_json = self._streams.get(stream_id)
        if stream_id_json is None:
            if len(self._streams) >= _CACHE_LIMIT:
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
    """Why a page row does not continue the chain, or None when it does."""
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
    if chain_hash(running_hash, canonical) != bytes(event_hash):
        return "hash does not match the event's content"
    return None


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
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    ceiling = _NO_CEILING if up_to is None else up_to
    encoder = StoredEventEncoder()
    head_position, head_hash = from_position, from_hash
    checked = 0
    rows = await driver.fetch(PAGE_QUERY, from_position, ceiling, batch_size)
    while rows:
        upcoming = asyncio.ensure_future(driver.fetch(PAGE_QUERY, rows[-1][0], ceiling, batch_size))
        try:
            for index, row in enumerate(rows, start=1):
                reason = _fault(row, head_position + 1, head_hash, encoder)
                if reason is not None:
                    return ChainVerification(
                        valid=False,
                        checked=checked,
                        head_position=head_position,
                        head_hash=head_hash,
                        first_invalid_position=head_position + 1,
                        reason=reason,
                    )
                head_position, head_hash = row[0], bytes(row[10])
                checked += 1
                if index % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            # Even after a failure: the connection is free again only once it is read.
            rows = await upcoming
    return ChainVerification(
        valid=True, checked=checked, head_position=head_position, head_hash=head_hash
    )
