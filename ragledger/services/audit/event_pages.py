"""The ledger view: events by keyset on `position`, a document's events included.

Paging the ledger (`page_events`) is keyset pagination on `position`, implemented here
rather than with fastapi-pagination's SQLAlchemy cursor paginator: that one encodes
unsigned cursors and reaches for a total count, while the audit view needs cursors that
cannot be forged (`cursor.py`) and a query that stays cheap on millions of events.
Positions are gapless and commit in order (the append lock), so "after position p" is
exact: paging newest-first never repeats or skips an event that existed when the first
page was read (new events land above the first page), and paging oldest-first reaches
the events appended meanwhile at the end. The page has fastapi-pagination's cursor page
shape.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, literal, literal_column, select, union
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.database import plan_each_query
from ragledger.core.paging import MAX_PAGE_SIZE
from ragledger.events import store
from ragledger.events.documents import document_stream
from ragledger.events.envelope import RecordedEvent
from ragledger.models.audit import AuditDocumentEventRow, AuditDocumentStreamRow
from ragledger.models.ledger import EventRow
from ragledger.services.audit.cursor import (
    Direction,
    EventCursor,
    InvalidCursorError,
    Order,
    decode_cursor,
    encode_cursor,
)
from ragledger.services.audit.filters import EventFilters
from ragledger.services.audit.positions import (
    PositionRange,
    positions_for_times,
    projected_position,
)

_events = EventRow.__table__


def clamp_size(size: int) -> int:
    """Page size clamped to 1..MAX_PAGE_SIZE (asking for more is not an error)."""
    return max(1, min(size, MAX_PAGE_SIZE))


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of the ledger, in the requested order, with signed cursors around it."""

    items: list[RecordedEvent]
    next_page: str | None
    previous_page: str | None
    current_page: str | None
    cursor: EventCursor | None

    def record(self) -> dict[str, tuple[str, ...]]:
        """Where the page started, for AuditViewed (empty for a first page)."""
        if self.cursor is None:
            return {}
        return {"cursor": (self.cursor.direction, str(self.cursor.position))}


# The projection that lists the events of the question streams linked to a document.
DOCUMENT_EVENTS_PROJECTION = "audit_document_events"
_document_events = AuditDocumentEventRow.__table__
_document_streams = AuditDocumentStreamRow.__table__


def _positions_page(part: Select[Any], column: Any, descending: bool, limit: int) -> Select[Any]:
    return part.order_by(column.desc() if descending else column.asc()).limit(limit)


async def _document_page_query(
    session: AsyncSession,
    document_id: uuid.UUID,
    bounds: PositionRange,
    where: list[Any],
    descending: bool,
    limit: int,
) -> Select[Any]:
    """The page of the events concerning a document, as four small ordered parts.

    The document's stream (its index range); the `audit_document_events` rows (events
    of question streams linked up to the projection's position P); the events after P
    of the streams linked up to P; and every event of the streams linked after P (found
    by scanning the ContextRetrieved events after P). Each part is cut to `limit` in
    page order, their union is cut again. P is read first: a projection that moved on
    since only adds rows the other parts also find, and the union removes the repeats.
    """
    projected = await projected_position(session, DOCUMENT_EVENTS_PROJECTION)
    position = _events.c.position
    own = select(position).where(
        _events.c.stream_id == document_stream(document_id),
        *bounds.conditions(position),
        *where,
    )
    linked = (
        select(_document_events.c.position)
        .join(_events, position == _document_events.c.position)
        .where(
            _document_events.c.document_id == document_id,
            *bounds.conditions(_document_events.c.position),
            *where,
        )
    )
    tail = bounds.narrowed(low=projected + 1)
    linked_tail = select(position).where(
        *tail.conditions(position),
        exists()
        .where(
            _document_streams.c.stream_id == _events.c.stream_id,
            _document_streams.c.document_id == document_id,
        )
        .correlate(_events),
        *where,
    )
    context = _events.alias("c")
    # Spelled like ix_events_context_chunks' predicate, though the position range is
    # what this scan is meant to use.
    linked_after = (
        select(context.c.stream_id)
        .where(
            context.c.position > projected,
            context.c.event_type == "ContextRetrieved",
            literal_column("c.payload->'chunks'").op("@>")(
                literal([{"document_id": str(document_id)}], JSONB)
            ),
        )
        .scalar_subquery()
    )
    new_streams = select(position).where(
        _events.c.stream_id.in_(linked_after), *bounds.conditions(position), *where
    )
    parts = [
        _positions_page(own, position, descending, limit),
        _positions_page(linked, _document_events.c.position, descending, limit),
        _positions_page(linked_tail, position, descending, limit),
        _positions_page(new_streams, position, descending, limit),
    ]
    found = union(*(part.subquery().select() for part in parts)).subquery("found")
    page = _positions_page(select(found.c.position), found.c.position, descending, limit)
    return (
        select(*store.EVENT_COLUMNS)
        .where(position.in_(page.scalar_subquery()))
        .order_by(position.desc() if descending else position.asc())
    )


async def page_events(
    session: AsyncSession,
    *,
    filters: EventFilters,
    order: Order,
    size: int,
    cursor: str | None,
    key: bytes,
) -> EventPage:
    """A page of the ledger after `cursor` (None: the first page) in `order`.

    `next_page` is None at the end. Newest-first, the first page starts at the head as
    it is now, and a later page's `previous_page` walks back up to the events appended
    since. Oldest-first, a null `next_page` means the head was reached: request
    `current_page` again later for the events appended since. A first page has no
    `previous_page`. A time range is turned into the position range it covers first.
    """
    size = clamp_size(size)
    await plan_each_query(session)
    fingerprint = filters.fingerprint(order)
    start: EventCursor | None = None
    if cursor is not None:
        start = decode_cursor(cursor, key)
        if start.fingerprint != fingerprint or start.order != order:
            raise InvalidCursorError(
                "the cursor was issued for other filters or another order; "
                "repeat the query that returned it"
            )
    direction: Direction = start.direction if start is not None else "next"
    # Going "next" in newest order walks positions down; "prev" walks the other way.
    descending = (order == "newest") == (direction == "next")
    bounds = await positions_for_times(session, filters.recorded_from, filters.recorded_to)
    bounds = bounds.narrowed(filters.from_position, filters.to_position)
    if start is not None:
        bounds = (
            bounds.narrowed(high=start.position - 1)
            if descending
            else bounds.narrowed(low=start.position + 1)
        )
    where = filters.conditions(positions=False)
    position = _events.c.position
    if bounds.empty:
        rows = []
    else:
        if filters.document_id is None:
            query = _positions_page(
                select(*store.EVENT_COLUMNS).where(*bounds.conditions(position), *where),
                position,
                descending,
                size + 1,
            )
        else:
            query = await _document_page_query(
                session, filters.document_id, bounds, where, descending, size + 1
            )
        rows = [store.to_recorded(row) for row in await session.execute(query)]
    more = len(rows) > size
    items = rows[:size]
    if direction == "prev":
        items.reverse()

    def make(position: int, towards: Direction) -> str:
        return encode_cursor(EventCursor(position, order, towards, fingerprint), key)

    # A boundary just beyond the cursor's own position, for pages that came back empty.
    step = -1 if order == "newest" else 1
    next_page: str | None
    previous_page: str | None
    if direction == "next":
        next_page = make(items[-1].position, "next") if more else None
        if start is None:
            previous_page = None
        elif items:
            previous_page = make(items[0].position, "prev")
        else:
            previous_page = make(start.position + step, "prev")
    else:
        assert start is not None
        previous_page = make(items[0].position, "prev") if more else None
        next_page = (
            make(items[-1].position, "next") if items else make(start.position - step, "next")
        )
    return EventPage(items, next_page, previous_page, current_page=cursor, cursor=start)
