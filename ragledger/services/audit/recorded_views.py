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


# The view name of one answer's read, the same from the API and the console, so the
# answer's story lists every read of it whichever surface it came through.
ANSWER_VIEW = "answer"


async def record_answer_view(
    session: AsyncSession,
    *,
    reader_id: uuid.UUID,
    answer_id: uuid.UUID,
    metadata: EventMetadata,
    asked_by: uuid.UUID | None = None,
) -> None:
    """Record that `reader_id` read the answer `answer_id` (not the asker's own read).

    With `asked_by` (the answers route, the console's answer page) an asker reading
    their own answer is no audit read and nothing is recorded; without it (the audit
    story) every read is. Call it last, as `record_view`.
    """
    if asked_by is not None and asked_by == reader_id:
        return
    await record_view(
        session,
        auditor_id=reader_id,
        view=ANSWER_VIEW,
        filters={},
        item_count=1,
        target_id=str(answer_id),
        metadata=metadata,
    )
