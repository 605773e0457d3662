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

from sqlalchemy import Select, Text, func, literal_column, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.database import plan_each_query
from ragledger.events import store
from ragledger.events.audit import AuditViewed, audit_stream
from ragledger.events.documents import document_stream
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.events.questions import question_stream
from ragledger.models.audit import AuditAnswerRow
from ragledger.models.ledger import EventRow, SubscriberCheckpoint
from ragledger.models.users import Role
from ragledger.services.documents import Reader
from ragledger.services.errors import DomainError, NotFoundError
from ragledger.services.provenance import Provenance, load_provenance

Order = Literal["newest", "oldest"]
Direction = Literal["next", "prev"]

# 500 items of a few kilobytes each keeps a page under a few megabytes; more than that
# is an export, which has its own route.
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
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
# The document's stream and those of the questions whose retrieved context held it; the
# ContextRetrieved lookup matches the partial GIN index ix_events_context_chunks.
_DOCUMENT_STREAMS = text(
    "SELECT CAST(:document_stream AS text) AS stream_id UNION "
    "SELECT c.stream_id FROM events AS c WHERE c.event_type = 'ContextRetrieved' "
    "AND c.payload->'chunks' @> CAST(:document_needle AS jsonb)"
)
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

    def conditions(self) -> list[Any]:
        """SQL conditions on `events` but the document's, every value a bound parameter."""
        where: list[Any] = []
        if self.event_types:
            where.append(_events.c.event_type.in_(self.event_types))
        if self.actor is not None:
            where.append(_actor_id == self.actor)
        if self.stream is not None:
            where.append(_events.c.stream_id == self.stream)
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


def _document_page_query(
    document_id: uuid.UUID, where: list[Any], descending: bool, limit: int
) -> Select[Any]:
    # The page of each of the document's streams by the (stream_id, stream_version)
    # index, then the best `limit` of those. Within a stream, version order is position
    # order. A plain `stream_id IN (...)` lets the planner walk the whole ledger
    # backwards when it misjudges how rare the streams are.
    streams = (
        _DOCUMENT_STREAMS.bindparams(
            document_stream=document_stream(document_id),
            document_needle=json.dumps([{"document_id": str(document_id)}]),
        )
        .columns(stream_id=Text)
        .subquery("document_streams")
    )
    version = _events.c.stream_version
    per_stream = (
        select(*store.EVENT_COLUMNS)
        .where(_events.c.stream_id == streams.c.stream_id, *where)
        .order_by(version.desc() if descending else version.asc())
        .limit(limit)
        .lateral("per_stream")
    )
    return (
        select(*(per_stream.c[c.name] for c in store.EVENT_COLUMNS))
        .select_from(streams.join(per_stream, true()))
        .order_by(per_stream.c.position.desc() if descending else per_stream.c.position.asc())
        .limit(limit)
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
    `previous_page`.
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
    where = filters.conditions()
    if start is not None:
        where.append(
            _events.c.position < start.position
            if descending
            else _events.c.position > start.position
        )
    if filters.document_id is None:
        query = (
            select(*store.EVENT_COLUMNS)
            .where(*where)
            .order_by(_events.c.position.desc() if descending else _events.c.position.asc())
            .limit(size + 1)
        )
    else:
        query = _document_page_query(filters.document_id, where, descending, size + 1)
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
DocumentMatch = Literal["context", "cited"]


@dataclass(frozen=True, slots=True)
class AnswerFilters:
    """Filters of the answers view; asked_at in [from, to).

    `document` with match `context` selects answers whose retrieved context held the
    document (the model saw it); with `cited`, those whose answer cited one of its
    blocks. `without_citation` True: answered with no citation; False: at least one.
    """

    asked_by: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    document_match: DocumentMatch = "context"
    asked_from: datetime | None = None
    asked_to: datetime | None = None
    statuses: tuple[AnswerStatus, ...] = ()
    without_citation: bool | None = None

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
        ):
            if value is not None:
                values[name] = (str(value),)
        return values

    def query(self) -> Select[tuple[AuditAnswerRow]]:
        """The answers matching these filters, newest question first."""
        query = select(AuditAnswerRow)
        if self.asked_by is not None:
            query = query.where(AuditAnswerRow.asked_by == self.asked_by)
        if self.document_id is not None:
            column = (
                AuditAnswerRow.cited_document_ids
                if self.document_match == "cited"
                else AuditAnswerRow.context_document_ids
            )
            query = query.where(column.contains([self.document_id]))
        if self.asked_from is not None:
            query = query.where(AuditAnswerRow.asked_at >= self.asked_from)
        if self.asked_to is not None:
            query = query.where(AuditAnswerRow.asked_at < self.asked_to)
        if self.statuses:
            query = query.where(AuditAnswerRow.status.in_(self.statuses))
        if self.without_citation is True:
            query = query.where(
                AuditAnswerRow.status == "answered", AuditAnswerRow.citation_count == 0
            )
        elif self.without_citation is False:
            query = query.where(AuditAnswerRow.citation_count > 0)
        return query.order_by(AuditAnswerRow.asked_position.desc())


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
    """Append AuditViewed in the request's transaction: it commits with the response.

    Call it last, after the view's queries: the append lock is held until commit.
    """
    await store.append(
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
