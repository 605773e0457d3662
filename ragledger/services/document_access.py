"""Who may read a document now: the `document_access` table and the checks against it.

The commands that upload, change access or retract write the row in their own
transaction, so every read that runs after a command returns (search, questions,
listings, provenance) honours it, whatever the projections' lag. The `chunks`
projection writes the same rows from the ledger, only ever forward (a row moves only to
a later ledger position), so replays and events appended some other way agree.

Rules (fail closed): admins and auditors read every document that is not retracted;
anyone else reads a document that is public or shares a group with them. A document
with no row is readable by no one but is listed to admins and auditors.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.models.documents import DocumentAccessRow

# Why a reader is not shown a document's content (the `withheld` field of a context block).
RETRACTED = "retracted"
ACCESS_REVOKED = "access_revoked"

# SQL over the alias `c` of a table with `document_id` (chunks). Scalar subqueries on
# purpose: PostgreSQL keeps them as per-row filters, so an HNSW index scan stays an
# ordered index scan (a join would not), and each lookup is one primary-key probe.
LIVE_SQL = (
    "COALESCE((SELECT NOT da.retracted FROM document_access AS da "
    "WHERE da.document_id = c.document_id), false)"
)
# Readable by a reader with the bound `:groups` (text[]), retraction aside (see LIVE_SQL).
GROUP_READABLE_SQL = (
    "COALESCE((SELECT da.public OR da.access_groups && CAST(:groups AS text[]) "
    "FROM document_access AS da WHERE da.document_id = c.document_id), false)"
)


@dataclass(frozen=True, slots=True)
class DocumentAccess:
    """A document's current readers and whether it is retracted."""

    document_id: uuid.UUID
    access_groups: tuple[str, ...]
    public: bool
    retracted: bool


async def record_access(
    session: AsyncSession,
    *,
    document_id: uuid.UUID,
    position: int,
    access_groups: Sequence[str] | None = None,
    public: bool | None = None,
    retracted: bool | None = None,
) -> None:
    """Set the fields given (None: keep) as of ledger `position`; an older position is a no-op."""
    statement = insert(DocumentAccessRow).values(
        document_id=document_id,
        access_groups=list(access_groups or ()),
        public=bool(public),
        retracted=bool(retracted),
        position=position,
    )
    changes: dict[str, object] = {"position": statement.excluded.position}
    if access_groups is not None:
        changes["access_groups"] = statement.excluded.access_groups
    if public is not None:
        changes["public"] = statement.excluded.public
    if retracted is not None:
        changes["retracted"] = statement.excluded.retracted
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[DocumentAccessRow.document_id],
            set_=changes,
            where=DocumentAccessRow.position < statement.excluded.position,
        )
    )


async def current_access(
    session: AsyncSession, document_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, DocumentAccess]:
    """The current access of each document asked for that has a row."""
    if not document_ids:
        return {}
    rows = await session.scalars(
        select(DocumentAccessRow).where(DocumentAccessRow.document_id.in_(list(document_ids)))
    )
    return {
        row.document_id: DocumentAccess(
            row.document_id, tuple(row.access_groups), row.public, row.retracted
        )
        for row in rows
    }


def withheld_reason(
    access: DocumentAccess | None, *, sees_everything: bool, groups: Collection[str]
) -> str | None:
    """Why a reader may not read a document's content now, or None when they may.

    Admins and auditors read everything, retracted documents included (they audit it).
    """
    if sees_everything:
        return None
    if access is None:
        return ACCESS_REVOKED
    if access.retracted:
        return RETRACTED
    if access.public or set(access.access_groups) & set(groups):
        return None
    return ACCESS_REVOKED
