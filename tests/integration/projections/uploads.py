"""Uploading a document the way the admin API does, for the ingestion reactor's tests."""

from __future__ import annotations

import uuid

from ragledger.events.envelope import EventMetadata
from ragledger.services.documents import upload


async def upload_for_hr(db, content: bytes, name: str) -> uuid.UUID:
    """Upload `content` as `name` for the hr group, in its own transaction; its document id."""
    async with db.sessionmaker() as session, session.begin():
        accepted = await upload(
            session,
            content=content,
            filename=name,
            title=None,
            access_groups=["hr"],
            max_bytes=10_000_000,
            actor_id=None,
            metadata=EventMetadata(actor_id="test", actor_role="admin"),
        )
    return accepted.document_id
