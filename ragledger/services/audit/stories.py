"""One question's story and one document's history, from the ledger and the projections."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnClause, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.documents import document_stream
from ragledger.events.envelope import RecordedEvent
from ragledger.events.questions import question_stream
from ragledger.models.audit import AuditAnswerDocumentRow, AuditAnswerRow
from ragledger.models.ledger import EventRow
from ragledger.models.users import Role
from ragledger.services.audit.positions import projected_position
from ragledger.services.documents import Reader
from ragledger.services.errors import NotFoundError
from ragledger.services.provenance import Provenance, load_provenance

# Reads of a question or answers citing a document, listed inline; the paginated views
# (`/audit/events`, `/audit/answers`) reach the rest.
MAX_STORY_READS = 1000
MAX_HISTORY_ANSWERS = 1000

_events = EventRow.__table__
_answer_documents = AuditAnswerDocumentRow.__table__
# Matches the partial index ix_events_audit_target.
_READS_OF_TARGET = text(
    "events.event_type = 'AuditViewed' AND events.payload->>'target_id' = :target_id"
)


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
    payload: ColumnClause[Any] = literal_column(
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

    # The document's answers are one range of audit_answer_documents (document_id,
    # asked_position): counted and cut to the newest there, so that neither a popular
    # document (tens of thousands of answers) nor a rare one (a scan of every answer
    # for its few) costs more than its own rows; only those rows' narrow columns are read.
    in_context = select(_answer_documents.c.asked_position).where(
        _answer_documents.c.document_id == document_id, _answer_documents.c.in_context
    )
    history.answer_count = int(
        await session.scalar(select(func.count()).select_from(in_context.subquery())) or 0
    )
    newest = in_context.order_by(_answer_documents.c.asked_position.desc()).limit(answers_limit)
    answers = await session.execute(
        select(
            AuditAnswerRow.question_id,
            AuditAnswerRow.asked_by,
            AuditAnswerRow.asked_at,
            AuditAnswerRow.status,
            AuditAnswerRow.model,
            AuditAnswerRow.citations,
            AuditAnswerRow.context,
            AuditAnswerRow.asked_position,
        )
        .where(AuditAnswerRow.asked_position.in_(newest.scalar_subquery()))
        .order_by(AuditAnswerRow.asked_position.desc())
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
