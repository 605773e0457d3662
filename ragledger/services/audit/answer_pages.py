"""The answers view: numbered pages of the `audit_answers` projection, with their total."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.database import plan_each_query
from ragledger.models.audit import AuditAnswerDocumentRow, AuditAnswerRow
from ragledger.services.audit.filters import AnswerFilters
from ragledger.services.audit.positions import asked_positions_for_times

_answers = AuditAnswerRow.__table__
_answer_documents = AuditAnswerDocumentRow.__table__


@dataclass(frozen=True, slots=True)
class AnswerPage:
    """One numbered page of answers, newest question first, and the matching total."""

    items: list[AuditAnswerRow]
    total: int
    page: int
    size: int


async def page_answers(
    session: AsyncSession, *, filters: AnswerFilters, page: int, size: int
) -> AnswerPage:
    """Page `page` (from 1) of `size` answers matching `filters`, with the exact total.

    The page is found on asked_position alone and only its rows are read whole, so a
    deep page never reads the wide rows it skips; the time range becomes an
    asked_position range first. Without a document filter that is an index-only walk
    of audit_answers; with one, it walks the document's range of
    `audit_answer_documents` (document_id, asked_position), joined to audit_answers
    only when other filters need its columns. The total is counted over the same keys,
    unless the page itself shows it (an empty first page, or a partial last page).
    """
    await plan_each_query(session)
    bounds = await asked_positions_for_times(session, filters.asked_from, filters.asked_to)
    if bounds.empty:
        return AnswerPage([], 0, page, size)
    key: ColumnElement[int]
    if filters.document_id is None:
        key = _answers.c.asked_position
        keys = select(key).where(*filters.conditions(times=False), *bounds.conditions(key))
    else:
        key = _answer_documents.c.asked_position
        keys = select(key).where(*filters.document_conditions(), *bounds.conditions(key))
        others = filters.conditions(times=False, document=False)
        if others:
            keys = keys.join(AuditAnswerRow, AuditAnswerRow.asked_position == key).where(*others)
    offset = (page - 1) * size
    found = [
        int(position)
        for position in await session.scalars(keys.order_by(key.desc()).offset(offset).limit(size))
    ]
    if 0 < len(found) < size or (not found and offset == 0):
        total = offset + len(found)
    else:
        total = int(await session.scalar(select(func.count()).select_from(keys.subquery())) or 0)
    items = (
        list(
            await session.scalars(
                select(AuditAnswerRow)
                .where(AuditAnswerRow.asked_position.in_(found))
                .order_by(AuditAnswerRow.asked_position.desc())
            )
        )
        if found
        else []
    )
    return AnswerPage(items, total, page, size)
