"""The filters of the ledger view and of the answers view, validated, as SQL conditions.

Every filter value reaches PostgreSQL as a bound parameter. The few SQL fragments
written as text hold constants only, spelled exactly like the expressions of the
indexes in migration 0004, which PostgreSQL only matches against constants.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnClause, Select, exists, literal_column, select

from ragledger.models.audit import AuditAnswerDocumentRow, AuditAnswerRow
from ragledger.models.ledger import EventRow
from ragledger.services.audit.cursor import Order
from ragledger.services.errors import DomainError

MAX_EVENT_TYPES = 50
MAX_FILTER_CHARS = 300

_events = EventRow.__table__
# Written like the expression of ix_events_actor_id_position.
_actor_id: ColumnClause[str] = literal_column("events.metadata->>'actor_id'")


class InvalidFilterError(DomainError):
    """A filter that cannot be applied: a reversed range, too many values, NUL (HTTP 400)."""

    status_code = 400


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
