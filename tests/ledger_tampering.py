"""Changing the ledger behind the application's back, as a superuser would, for tests.

The append-only trigger is switched off for the transaction
(`session_replication_role = replica`). A CHECK constraint still ties every event's
columns to the bytes its hash covers, so an attacker who wants to edit a column drops
that guard first; `tamper` does the same unless told to keep it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from ragledger.events.codec import HashedFields, canonical_bytes, canonical_json, chain_hash
from ragledger.services.ledger_verification import CONTENT_GUARD


async def tamper(db: Any, *statements: str, keep_guard: bool = False) -> None:
    """Run `statements` on the ledger as its owner, with the append-only trigger off."""
    async with db.owner_engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        if not keep_guard:
            drop = f"ALTER TABLE events DROP CONSTRAINT IF EXISTS {CONTENT_GUARD}"
            await conn.execute(text(drop))
        for statement in statements:
            await conn.execute(text(statement))


async def rewrite_and_rechain(db: Any, position: int, payload: dict[str, Any]) -> None:
    """Replace one event's payload and recompute every hash from it on: a careful forger.

    The chain stays internally consistent (its verification from genesis passes); only a
    kept digest, a signed tree head or a witness can tell.
    """
    async with db.owner_engine.begin() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT position, event_id, stream_id, stream_version, event_type, "
                    "schema_version, recorded_at, payload, metadata, prev_hash "
                    "FROM events WHERE position >= :p ORDER BY position"
                ),
                {"p": position},
            )
        ).all()
    prev = bytes(rows[0].prev_hash)
    updates = []
    for row in rows:
        fields = HashedFields(
            position=row.position,
            event_id=row.event_id,
            stream_id=row.stream_id,
            stream_version=row.stream_version,
            event_type=row.event_type,
            schema_version=row.schema_version,
            recorded_at=row.recorded_at,
            payload_json=canonical_json(payload if row.position == position else row.payload),
            metadata_json=canonical_json(row.metadata),
        )
        canonical = canonical_bytes(fields)
        digest = chain_hash(prev, canonical)
        updates.append(
            {
                "position": row.position,
                "payload": fields.payload_json,
                "canonical": canonical,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    async with db.owner_engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(f"ALTER TABLE events DROP CONSTRAINT IF EXISTS {CONTENT_GUARD}"))
        await conn.execute(
            text(
                "UPDATE events SET payload = CAST(:payload AS jsonb), canonical = :canonical, "
                "prev_hash = :prev_hash, hash = :hash WHERE position = :position"
            ),
            updates,
        )
