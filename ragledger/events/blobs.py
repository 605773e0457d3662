"""Content-addressed storage of large bytes: stored once under their SHA-256."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.models.ledger import BlobRow


async def put_blob(session: AsyncSession, content: bytes) -> str:
    """Store `content` unless an identical blob exists; return its hex SHA-256."""
    digest = hashlib.sha256(content).hexdigest()
    await session.execute(
        insert(BlobRow)
        .values(sha256=digest, size=len(content), content=content)
        .on_conflict_do_nothing(index_elements=[BlobRow.sha256])
    )
    return digest


async def get_blob(session: AsyncSession, sha256: str) -> bytes | None:
    """The bytes stored under `sha256`, or None."""
    content: bytes | None = await session.scalar(
        select(BlobRow.content).where(BlobRow.sha256 == sha256)
    )
    return content
