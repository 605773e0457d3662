"""Revoked (logged-out) tokens, in PostgreSQL, until the token would have expired anyway.

Revocation used to be a Redis key per token, so a Redis restart without persistence,
or a FLUSHDB, made every logged-out token work again. Now the logout writes a row of
`revoked_tokens` in the transaction that appends its `UserLoggedOut` event, and the
check rides on the query that loads the token's account (`TokenService.authenticate`):
no extra round trip, so a Redis cache in front would save nothing, and Redis plays no
part in revocation. The table holds only tokens still alive: each logout prunes the
expired rows (an index on `expires_at` keeps that cheap).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.models.users import RevokedTokenRow


async def revoke_token(
    session: AsyncSession, *, token_id: str, user_id: uuid.UUID, expires_at: float
) -> None:
    """Refuse `token_id` from this transaction's commit until `expires_at` (Unix seconds)."""
    await session.execute(delete(RevokedTokenRow).where(RevokedTokenRow.expires_at < func.now()))
    await session.execute(
        insert(RevokedTokenRow)
        .values(
            token_id=token_id,
            user_id=user_id,
            expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
        )
        .on_conflict_do_nothing(index_elements=[RevokedTokenRow.token_id])
    )
