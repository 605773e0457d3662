"""Changing the ledger behind the application's back, as a superuser would, for tests.

The append-only trigger is switched off for the transaction
(`session_replication_role = replica`). A CHECK constraint still ties every event's
columns to the bytes its hash covers, so an attacker who wants to edit a column drops
that guard first; `tamper` does the same unless told to keep it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

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
