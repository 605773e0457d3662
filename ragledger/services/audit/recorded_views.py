"""Every audit read is recorded: AuditViewed, appended after the view's queries."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.audit import AuditViewed, audit_stream
from ragledger.events.envelope import EventMetadata


async def record_view(
    session: AsyncSession,
    *,
    auditor_id: uuid.UUID,
    view: str,
    filters: dict[str, tuple[str, ...]],
    item_count: int,
    metadata: EventMetadata,
    target_id: str | None = None,
) -> None:
    """Commit the request's reads, then append AuditViewed in autocommit.

    Call it last, after the view's queries: the read is recorded before the response.
    """
    await store.commit_then_append(
        session,
        audit_stream(auditor_id),
        [
            AuditViewed(
                auditor_id=auditor_id,
                view=view,
                filters=filters,
                item_count=item_count,
                target_id=target_id,
            )
        ],
        metadata=metadata,
    )
