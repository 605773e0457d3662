"""The audit views' queries: the ledger by keyset, answers, one question's story, a document.

Paging the ledger (`page_events`) is keyset pagination on `position`, implemented here
rather than with fastapi-pagination's SQLAlchemy cursor paginator: that one encodes
unsigned cursors and reaches for a total count, while the audit view needs cursors that
cannot be forged and a query that stays cheap on millions of events. Positions are
gapless and commit in order (the append lock), so "after position p" is exact: paging
newest-first never repeats or skips an event that existed when the first page was read
(new events land above the first page), and paging oldest-first reaches the events
appended meanwhile at the end. The page has fastapi-pagination's cursor page shape.

A cursor is `base64url(json) "." base64url(hmac_sha256(key, json))` with the JSON
`{"v": 1, "p": position, "o": order, "d": "next"|"prev", "f": filter fingerprint}`. The
key is derived from the server's secret key, so a cursor that was altered, made up or
issued by another server is refused (400); the fingerprint ties it to the filters and
order it was issued for, so that it cannot silently page a different query.

Every filter value reaches PostgreSQL as a bound parameter. The few SQL fragments
written as text hold constants only, spelled exactly like the expressions of the
indexes in migration 0004, which PostgreSQL only matches against constants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import Select, exists, false, func, literal, literal_column, select, text, union
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.database import plan_each_query
from ragledger.core.paging import MAX_PAGE_SIZE
from ragledger.events import store
from ragledger.events.audit import AuditViewed, audit_stream
from ragledger.events.documents import document_stream
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.events.questions import question_stream
from ragledger.models.audit import (
    AuditAnswerDocumentRow,
    AuditAnswerRow,
    AuditDocumentEventRow,
    AuditDocumentStreamRow,
)
from ragledger.models.ledger import EventRow, SubscriberCheckpoint
from ragledger.models.users import Role
from ragledger.services.documents import Reader
from ragledger.services.errors import DomainError, NotFoundError
from ragledger.services.provenance import Provenance, load_provenance

Order = Literal["newest", "oldest"]
Direction = Literal["next", "prev"]

MAX_EVENT_TYPES = 50
MAX_FILTER_CHARS = 300
MAX_CURSOR_CHARS = 512
# Reads of a question or answers citing a document, listed inline; the paginated views
# (`/audit/events`, `/audit/answers`) reach the rest.
MAX_STORY_READS = 1000
MAX_HISTORY_ANSWERS = 1000
CURSOR_VERSION = 1

_events = EventRow.__table__
# Written like the expression of ix_events_actor_id_position.
_actor_id = literal_column("events.metadata->>'actor_id'")
# Matches the partial index ix_events_audit_target.
_READS_OF_TARGET = text(
    "events.event_type = 'AuditViewed' AND events.payload->>'target_id' = :target_id"
)


class InvalidCursorError(DomainError):
    """A cursor that is malformed, forged, or meant for another query (HTTP 400)."""

    status_code = 400


class InvalidFilterError(DomainError):
    """A filter that cannot be applied: a reversed range, too many values, NUL (HTTP 400)."""

    status_code = 400


# --------------------------------------------------------------------------- cursors


@dataclass(frozen=True, slots=True)
class EventCursor:
    """Where a page of the ledger starts: after `position` going `direction` in `order`."""

    position: int
    order: Order
    direction: Direction
    fingerprint: str


@lru_cache(maxsize=8)
def cursor_key(secret: str) -> bytes:
    """The cursor signing key, derived so that it signs nothing but cursors."""
    return hmac.new(secret.encode(), b"ragledger/audit-cursor/v1", hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text_value: str) -> bytes:
    if not text_value or not text_value.isascii():
        raise ValueError("not base64url")
    # validate=True refuses characters outside the alphabet instead of skipping them.
    return base64.b64decode(
        text_value + "=" * (-len(text_value) % 4), altchars=b"-_", validate=True
    )


def encode_cursor(cursor: EventCursor, key: bytes) -> str:
    """The opaque, signed form of a cursor."""
    body = json.dumps(
        {
            "v": CURSOR_VERSION,
            "p": cursor.position,
            "o": cursor.order,
            "d": cursor.direction,
            "f": cursor.fingerprint,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64encode(body)}.{_b64encode(signature)}"


def decode_cursor(token: str, key: bytes) -> EventCursor:
    """The cursor a token holds; InvalidCursorError unless it is well-formed and ours."""
    if len(token) > MAX_CURSOR_CHARS or token.count(".") != 1:
        raise InvalidCursorError("malformed cursor")
    body_text, signature_text = token.split(".")
    try:
        body = _b64decode(body_text)
        signature = _b64decode(signature_text)
    except (ValueError, binascii.Error):
        raise InvalidCursorError("malformed cursor") from None
    # The signature is checked before the body is parsed: nothing unauthenticated is
    # interpreted beyond its base64.
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidCursorError(
            "cursor signature is invalid: it was altered or not issued by this server"
        )
    try:
        data = json.loads(body)
        version, position, order, direction, fingerprint = (
            data["v"],
            data["p"],
            data["o"],
            data["d"],
            data["f"],
        )
    except (ValueError, KeyError, TypeError):
        raise InvalidCursorError("malformed cursor") from None
    if (
        version != CURSOR_VERSION
        or type(position) is not int
        or position < 0
        or order not in ("newest", "oldest")
        or direction not in ("next", "prev")
        or not isinstance(fingerprint, str)
    ):
        raise InvalidCursorError("malformed cursor")
    return EventCursor(position, order, direction, fingerprint)


def clamp_size(size: int) -> int:
    """Page size clamped to 1..MAX_PAGE_SIZE (asking for more is not an error)."""
    return max(1, min(size, MAX_PAGE_SIZE))


# --------------------------------------------------------------------------- filters


def _as_utc(moment: datetime | None) -> datetime | None:
    # A time without a zone is taken as UTC, the ledger's own zone.
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _clean(value: str, name: str) -> str:
    if "\x00" in value:
        raise InvalidFilterError(f"{name} must not contain NUL characters")
    if len(value) > MAX_FILTER_CHARS:
        raise InvalidFilterError(f"{name} must be at most {MAX_FILTER_CHARS} characters")
    return value


def _check_time_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidFilterError("the time range is reversed: 'from' is after 'to'")


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Filters of the ledger view; times are [from, to), positions [from, to].

    `document_id` selects the document's own stream and the streams of the questions
    whose retrieved context included one of its chunks.
    """

    event_types: tuple[str, ...] = ()
    actor: str | None = None
    stream: str | None = None
    document_id: uuid.UUID | None = None
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None
    from_position: int | None = None
    to_position: int | None = None

    @classmethod
    def build(
        cls,
        *,
        event_types: Sequence[str] | None = None,
        actor: str | None = None,
        stream: str | None = None,
        document_id: uuid.UUID | None = None,
        recorded_from: datetime | None = None,
        recorded_to: datetime | None = None,
        from_position: int | None = None,
        to_position: int | None = None,
    ) -> EventFilters:
        """Validated, normalised filters; InvalidFilterError for what cannot be applied."""
        types = tuple(sorted({_clean(t, "event_type") for t in event_types or ()}))
        if len(types) > MAX_EVENT_TYPES:
            raise InvalidFilterError(f"at most {MAX_EVENT_TYPES} event types per request")
        start, end = _as_utc(recorded_from), _as_utc(recorded_to)
        _check_time_range(start, end)
        if from_position is not None and to_position is not None and from_position > to_position:
            raise InvalidFilterError(
                "the position range is reversed: 'from_position' is after 'to_position'"
            )
        return cls(
            event_types=types,
            actor=_clean(actor, "actor") if actor is not None else None,
            stream=_clean(stream, "stream") if stream is not None else None,
            document_id=document_id,
            recorded_from=start,
            recorded_to=end,
            from_position=from_position,
            to_position=to_position,
        )

    def record(self) -> dict[str, tuple[str, ...]]:
        """The filters in use, as recorded in AuditViewed (absent ones left out)."""
        values: dict[str, tuple[str, ...]] = {}
        if self.event_types:
            values["event_type"] = self.event_types
        for name, value in (
            ("actor", self.actor),
            ("stream", self.stream),
            ("document", self.document_id),
            ("from", self.recorded_from.isoformat() if self.recorded_from else None),
            ("to", self.recorded_to.isoformat() if self.recorded_to else None),
            ("from_position", self.from_position),
            ("to_position", self.to_position),
        ):
            if value is not None:
                values[name] = (str(value),)
        return values

    def fingerprint(self, order: Order) -> str:
        """A short digest of these filters and the order, carried in signed cursors."""
        canonical = json.dumps(
            {"order": order, **self.record()}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def conditions(self, *, positions: bool = True) -> list[Any]:
        """SQL conditions on `events` but the document's, every value a bound parameter.

        `positions` False leaves out the time and position bounds, for a caller that
        applies them as a PositionRange (see `positions_for_times`).
        """
        where: list[Any] = []
        if self.event_types:
            where.append(_events.c.event_type.in_(self.event_types))
        if self.actor is not None:
            where.append(_actor_id == self.actor)
        if self.stream is not None:
            where.append(_events.c.stream_id == self.stream)
        if not positions:
            return where
        if self.recorded_from is not None:
            where.append(_events.c.recorded_at >= self.recorded_from)
        if self.recorded_to is not None:
            where.append(_events.c.recorded_at < self.recorded_to)
        if self.from_position is not None:
            where.append(_events.c.position >= self.from_position)
        if self.to_position is not None:
            where.append(_events.c.position <= self.to_position)
        return where


# --------------------------------------------------------------------------- the ledger


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


@dataclass(frozen=True, slots=True)
class PositionRange:
    """Inclusive position bounds (None: open); `empty` when no position can match."""

    low: int | None = None
    high: int | None = None
    empty: bool = False

    def narrowed(self, low: int | None = None, high: int | None = None) -> PositionRange:
        """This range intersected with [low, high]."""
        new_low = self.low if low is None else low if self.low is None else max(self.low, low)
        new_high = (
            self.high if high is None else high if self.high is None else min(self.high, high)
        )
        empty = self.empty or (new_low is not None and new_high is not None and new_low > new_high)
        return PositionRange(new_low, new_high, empty)

    def conditions(self, column: Any) -> list[Any]:
        """The bounds as conditions on a position column."""
        if self.empty:
            return [false()]
        where: list[Any] = []
        if self.low is not None:
            where.append(column >= self.low)
        if self.high is not None:
            where.append(column <= self.high)
        return where


# The first event recorded at or after a moment. recorded_at is the database clock read
# under the append lock (clock_timestamp() after pg_advisory_xact_lock), so it never
# decreases as positions grow: the events of [from, to) are exactly the positions from
# the first event at or after `from` to the one before the first at or after `to`.
_FIRST_AT_OR_AFTER = (
    "(SELECT e.position FROM events AS e WHERE e.recorded_at >= CAST(:{name} AS timestamptz) "
    "ORDER BY e.recorded_at, e.position LIMIT 1)"
)


async def positions_for_times(
    session: AsyncSession, start: datetime | None, end: datetime | None
) -> PositionRange:
    """The position range of the events recorded in [start, end).

    Two probes of the recorded_at index; the ledger is then paged by position, which
    is what makes a time filter as cheap as a position filter. A moment after the head
    leaves that side open, so that events appended later still match.
    """
    return await _range_for_times(session, _FIRST_AT_OR_AFTER, start, end)


async def _range_for_times(
    session: AsyncSession, probe: str, start: datetime | None, end: datetime | None
) -> PositionRange:
    """[start, end) as a range of the positions that `probe` finds for each moment."""
    if start is None and end is None:
        return PositionRange()
    row = (
        await session.execute(
            text(
                "SELECT "
                + probe.format(name="start")
                + " AS low, "
                + probe.format(name="end")
                + " AS high"
            ),
            {"start": start, "end": end},
        )
    ).one()
    bounds = PositionRange()
    if start is not None:
        if row.low is None:
            # Nothing recorded at or after `start` yet.
            return PositionRange(empty=True)
        bounds = bounds.narrowed(low=int(row.low))
    if end is not None and row.high is not None:
        bounds = bounds.narrowed(high=int(row.high) - 1)
    return bounds


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


# --------------------------------------------------------------------------- answers

AnswerStatus = Literal["pending", "answered", "no_context", "failed"]
_answer_documents = AuditAnswerDocumentRow.__table__
DocumentMatch = Literal["context", "cited"]


@dataclass(frozen=True, slots=True)
class AnswerFilters:
    """Filters of the answers view; asked_at in [from, to).

    `document` with match `context` selects answers whose retrieved context held the
    document (the model saw it); with `cited`, those whose answer cited one of its
    blocks. `without_citation` True: answered with no citation; False: at least one.
    `max_groundedness`: checked answers whose groundedness is at most this (0-1).
    """

    asked_by: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    document_match: DocumentMatch = "context"
    asked_from: datetime | None = None
    asked_to: datetime | None = None
    statuses: tuple[AnswerStatus, ...] = ()
    without_citation: bool | None = None
    max_groundedness: float | None = None

    @classmethod
    def build(
        cls,
        *,
        asked_by: uuid.UUID | None = None,
        document_id: uuid.UUID | None = None,
        document_match: DocumentMatch = "context",
        asked_from: datetime | None = None,
        asked_to: datetime | None = None,
        statuses: Sequence[AnswerStatus] | None = None,
        without_citation: bool | None = None,
        max_groundedness: float | None = None,
    ) -> AnswerFilters:
        """Validated, normalised filters; InvalidFilterError for a reversed time range."""
        start, end = _as_utc(asked_from), _as_utc(asked_to)
        _check_time_range(start, end)
        return cls(
            asked_by=asked_by,
            document_id=document_id,
            document_match=document_match,
            asked_from=start,
            asked_to=end,
            statuses=tuple(sorted(set(statuses or ()))),
            without_citation=without_citation,
            max_groundedness=max_groundedness,
        )

    def record(self) -> dict[str, tuple[str, ...]]:
        """The filters in use, as recorded in AuditViewed."""
        values: dict[str, tuple[str, ...]] = {}
        if self.statuses:
            values["status"] = self.statuses
        for name, value in (
            ("user", self.asked_by),
            ("document", self.document_id),
            ("document_match", self.document_match if self.document_id else None),
            ("from", self.asked_from.isoformat() if self.asked_from else None),
            ("to", self.asked_to.isoformat() if self.asked_to else None),
            (
                "without_citation",
                str(self.without_citation).lower() if self.without_citation is not None else None,
            ),
            ("max_groundedness", self.max_groundedness),
        ):
            if value is not None:
                values[name] = (str(value),)
        return values

    def document_conditions(self) -> list[Any]:
        """The document filter as conditions on `audit_answer_documents` (none without one).

        A question has a row there for each document in its context or citations,
        flagged `in_context` and `cited`: exactly `context_document_ids` and
        `cited_document_ids` of its audit_answers row, kept by the same projection.
        """
        if self.document_id is None:
            return []
        flag = (
            _answer_documents.c.cited
            if self.document_match == "cited"
            else _answer_documents.c.in_context
        )
        return [_answer_documents.c.document_id == self.document_id, flag]

    def conditions(self, *, times: bool = True, document: bool = True) -> list[Any]:
        """SQL conditions on `audit_answers`, every value a bound parameter.

        `times` False leaves out the asked_at range, for a caller that applies it as
        an asked_position range (see `asked_positions_for_times`); `document` False
        leaves out the document filter, for a caller that reads `audit_answer_documents`
        itself (see `document_conditions`).
        """
        where: list[Any] = []
        if self.asked_by is not None:
            where.append(AuditAnswerRow.asked_by == self.asked_by)
        if document and self.document_id is not None:
            where.append(
                exists().where(
                    *self.document_conditions(),
                    _answer_documents.c.asked_position == AuditAnswerRow.asked_position,
                )
            )
        if times and self.asked_from is not None:
            where.append(AuditAnswerRow.asked_at >= self.asked_from)
        if times and self.asked_to is not None:
            where.append(AuditAnswerRow.asked_at < self.asked_to)
        if self.statuses:
            where.append(AuditAnswerRow.status.in_(self.statuses))
        if self.without_citation is True:
            where += [AuditAnswerRow.status == "answered", AuditAnswerRow.citation_count == 0]
        elif self.without_citation is False:
            where.append(AuditAnswerRow.citation_count > 0)
        if self.max_groundedness is not None:
            where.append(AuditAnswerRow.groundedness <= self.max_groundedness)
        return where

    def query(self) -> Select[tuple[AuditAnswerRow]]:
        """The answers matching these filters, newest question first."""
        return (
            select(AuditAnswerRow)
            .where(*self.conditions())
            .order_by(AuditAnswerRow.asked_position.desc())
        )


# As for the ledger: asked_at is the QuestionAsked event's recorded_at and
# asked_position its position, so asked_at never decreases as asked_position grows.
_FIRST_ASKED_AT_OR_AFTER = (
    "(SELECT a.asked_position FROM audit_answers AS a "
    "WHERE a.asked_at >= CAST(:{name} AS timestamptz) "
    "ORDER BY a.asked_at, a.asked_position LIMIT 1)"
)


async def asked_positions_for_times(
    session: AsyncSession, start: datetime | None, end: datetime | None
) -> PositionRange:
    """The asked_position range of the questions asked in [start, end)."""
    return await _range_for_times(session, _FIRST_ASKED_AT_OR_AFTER, start, end)


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
    if filters.document_id is None:
        key = AuditAnswerRow.asked_position
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


async def projected_position(session: AsyncSession, name: str) -> int:
    """How far a projection has read the ledger (0 before its first batch)."""
    value = await session.scalar(
        select(SubscriberCheckpoint.position).where(SubscriberCheckpoint.name == name)
    )
    return int(value or 0)


# --------------------------------------------------------------------------- one question


@dataclass(frozen=True, slots=True)
class QuestionStory:
    """A question's provenance from the ledger, and the audit reads that targeted it."""

    provenance: Provenance
    question_events: list[RecordedEvent]
    source_events: list[RecordedEvent]
    reads: list[RecordedEvent]


async def question_story(
    session: AsyncSession, question_id: uuid.UUID, *, auditor_id: uuid.UUID
) -> QuestionStory:
    """Everything the ledger says about a question; NotFoundError if there is none.

    GET /answers/{id} records nothing today, so "who read it later" is the AuditViewed
    events aimed at this question (at most MAX_STORY_READS, oldest first).
    """
    # Auditors see every question; the role, not the caller's own, says so here.
    reader = Reader(user_id=auditor_id, role=Role.AUDITOR.value, groups=())
    provenance = await load_provenance(session, question_id, reader)
    stream = question_stream(question_id)
    question_events = [e for e in provenance.events if e.stream_id == stream]
    source_events = [e for e in provenance.events if e.stream_id != stream]
    result = await session.execute(
        select(*store.EVENT_COLUMNS)
        .where(_READS_OF_TARGET.bindparams(target_id=str(question_id)))
        .order_by(_events.c.position)
        .limit(MAX_STORY_READS)
    )
    reads = [store.to_recorded(row) for row in result]
    return QuestionStory(provenance, question_events, source_events, reads)


# --------------------------------------------------------------------------- one document


@dataclass(slots=True)
class VersionHistory:
    """One uploaded version and what ingestion made of it."""

    version: int
    title: str
    filename: str
    original_filename: str
    blob_sha256: str
    size: int
    content_type: str
    access_groups: list[str]
    uploaded_by: uuid.UUID | None
    uploaded_at: datetime
    uploaded_position: int
    status: str = "pending"
    char_count: int | None = None
    text_sha256: str | None = None
    chunk_count: int | None = None
    failure_stage: str | None = None
    failure_reason: str | None = None
    outcome_at: datetime | None = None
    outcome_position: int | None = None


@dataclass(frozen=True, slots=True)
class AccessChange:
    """A change of the groups that may read the document."""

    old_groups: list[str]
    new_groups: list[str]
    changed_by: uuid.UUID | None
    at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class Retraction:
    """The document's withdrawal."""

    retracted_by: uuid.UUID | None
    at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class CitingAnswer:
    """An answer whose context held the document: which versions, and which it cited."""

    question_id: uuid.UUID
    asked_by: uuid.UUID
    asked_at: datetime
    status: str
    model: str | None
    versions_in_context: list[int]
    cited_versions: list[int]
    asked_position: int


@dataclass(slots=True)
class DocumentHistory:
    """Everything that happened to a document, and the answers that used it."""

    document_id: uuid.UUID
    versions: list[VersionHistory] = field(default_factory=list)
    access_changes: list[AccessChange] = field(default_factory=list)
    retraction: Retraction | None = None
    events: list[RecordedEvent] = field(default_factory=list)
    answers: list[CitingAnswer] = field(default_factory=list)
    answer_count: int = 0
    answers_projected_to: int = 0


def _uuid_or_none(value: object) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value is not None else None


async def document_history(
    session: AsyncSession, document_id: uuid.UUID, *, answers_limit: int
) -> DocumentHistory:
    """A document's versions, access changes, retraction and citing answers.

    The document's part comes from its stream in the ledger; the answers come from the
    `audit_answers` projection (newest first, at most `answers_limit`), whose position
    is reported so that a reader knows how current that part is.
    """
    # Chunk texts and vectors stay in the database: their events' envelopes are enough.
    payload = literal_column(
        "CASE WHEN events.event_type IN ('DocumentChunked', 'ChunksEmbedded') "
        "THEN NULL ELSE events.payload END"
    )
    rows = await session.execute(
        select(*(payload if c is _events.c.payload else c for c in store.EVENT_COLUMNS))
        .where(_events.c.stream_id == document_stream(document_id))
        .order_by(_events.c.stream_version)
    )
    events = [store.to_recorded(row) for row in rows]
    if not events:
        raise NotFoundError("document not found")
    history = DocumentHistory(document_id=document_id, events=events)
    versions: dict[int, VersionHistory] = {}
    for e in events:
        p = e.payload or {}
        match e.event_type:
            case "DocumentUploaded":
                versions[p["version"]] = VersionHistory(
                    version=p["version"],
                    title=p["title"],
                    filename=p["filename"],
                    original_filename=p["original_filename"],
                    blob_sha256=p["blob_sha256"],
                    size=p["size"],
                    content_type=p["content_type"],
                    access_groups=list(p["access_groups"]),
                    uploaded_by=_uuid_or_none(p.get("uploaded_by")),
                    uploaded_at=e.recorded_at,
                    uploaded_position=e.position,
                )
            case "DocumentTextExtracted" if p["version"] in versions:
                versions[p["version"]].char_count = p["char_count"]
                versions[p["version"]].text_sha256 = p["text_sha256"]
            case "DocumentIndexed" if p["version"] in versions:
                v = versions[p["version"]]
                v.status, v.chunk_count = "indexed", p["chunk_count"]
                v.outcome_at, v.outcome_position = e.recorded_at, e.position
            case "DocumentIngestionFailed" if p["version"] in versions:
                v = versions[p["version"]]
                v.status, v.failure_stage, v.failure_reason = "failed", p["stage"], p["reason"]
                v.outcome_at, v.outcome_position = e.recorded_at, e.position
            case "DocumentAccessChanged":
                history.access_changes.append(
                    AccessChange(
                        old_groups=list(p["old_groups"]),
                        new_groups=list(p["new_groups"]),
                        changed_by=_uuid_or_none(p.get("changed_by")),
                        at=e.recorded_at,
                        position=e.position,
                    )
                )
            case "DocumentRetracted":
                history.retraction = Retraction(
                    retracted_by=_uuid_or_none(p.get("retracted_by")),
                    at=e.recorded_at,
                    position=e.position,
                )
            case _:
                pass
    history.versions = [versions[v] for v in sorted(versions)]

    citing = AuditAnswerRow.context_document_ids.contains([document_id])
    history.answer_count = int(
        await session.scalar(select(func.count()).select_from(AuditAnswerRow).where(citing)) or 0
    )
    answers = await session.scalars(
        select(AuditAnswerRow)
        .where(citing)
        .order_by(AuditAnswerRow.asked_position.desc())
        .limit(answers_limit)
    )
    wanted = str(document_id)
    for row in answers:
        cited_blocks = set(row.citations)
        mine = [c for c in row.context if str(c["document_id"]) == wanted]
        history.answers.append(
            CitingAnswer(
                question_id=row.question_id,
                asked_by=row.asked_by,
                asked_at=row.asked_at,
                status=row.status,
                model=row.model,
                versions_in_context=sorted({c["version"] for c in mine}),
                cited_versions=sorted({c["version"] for c in mine if c["n"] in cited_blocks}),
                asked_position=row.asked_position,
            )
        )
    history.answers_projected_to = await projected_position(session, "audit_answers")
    return history


# --------------------------------------------------------------------------- recording


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
