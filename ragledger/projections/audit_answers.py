"""The `audit_answers` projection: every question with its outcome, for the audit views.

One row per question, keyed by its id, folded from the question's own stream. Every
value comes from the events (timestamps are `recorded_at`, never the clock), so a
rebuild yields the same rows. Beside it, `audit_answer_documents` holds one narrow row
per (document, question) for each document in the question's context or citations, so
that the answers view's document filter is a range scan (migration 0009).

A batch is applied set-wise (`handle_batch`): the batch's questions already projected
are read in one statement, the events are folded into those rows in memory in ledger
order, and the rows that changed are written back with one upsert, then the changed
document rows with one delete and one upsert. Catching up used to cost a SELECT and an
UPDATE per event (~660 events/s at 1M events, bench/audit.py).

`handle` applies one event through the same fold: the fallback that names the failing
event when a batch cannot be applied. tests/integration/projections/
test_audit_answers_batch.py checks that batches of any size give the rows of one event
at a time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import any_, bindparam, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.envelope import RecordedEvent
from ragledger.events.payloads import to_json_value
from ragledger.events.questions import (
    AnswerFailed,
    AnswerFeedbackGiven,
    AnswerGenerated,
    ContextRetrieved,
    QuestionAsked,
)
from ragledger.events.registry import registry
from ragledger.models.audit import AuditAnswerDocumentRow, AuditAnswerRow
from ragledger.projections.subscriber import Projection

log = structlog.get_logger(__name__)


def _distinct_documents(
    context: Iterable[Mapping[str, Any]], blocks: set[int] | None = None
) -> list[uuid.UUID]:
    # First appearance order: deterministic, and the most relevant document comes first.
    seen: dict[uuid.UUID, None] = {}
    for chunk in context:
        if blocks is None or chunk["n"] in blocks:
            seen.setdefault(uuid.UUID(str(chunk["document_id"])), None)
    return list(seen)


# (in_context, cited) per document of one question.
DocumentFlags = dict[uuid.UUID, tuple[bool, bool]]


def document_flags(
    context_document_ids: Iterable[uuid.UUID], cited_document_ids: Iterable[uuid.UUID]
) -> DocumentFlags:
    """The `audit_answer_documents` rows of one question: (in_context, cited) per document."""
    context, cited = set(context_document_ids), set(cited_document_ids)
    return {d: (d in context, d in cited) for d in context | cited}


class _DocumentChanges:
    """The `audit_answer_documents` rows to delete and to write, gathered for one statement each."""

    def __init__(self) -> None:
        self.removed: list[tuple[uuid.UUID, int]] = []
        self.written: list[tuple[uuid.UUID, int, bool, bool]] = []

    def add(self, asked_position: int, before: DocumentFlags, after: DocumentFlags) -> None:
        """Record the difference between a question's rows before and after."""
        self.removed += [(d, asked_position) for d in before.keys() - after.keys()]
        self.written += [
            (d, asked_position, *flags) for d, flags in after.items() if before.get(d) != flags
        ]

    async def write(self, session: AsyncSession) -> None:
        """Apply the gathered changes (nothing to do costs no statement)."""
        if self.removed:
            await session.execute(
                _DELETE_DOCUMENTS,
                {
                    "documents": [d for d, _ in self.removed],
                    "positions": [p for _, p in self.removed],
                },
            )
        if self.written:
            await session.execute(
                _UPSERT_DOCUMENTS,
                {
                    "documents": [row[0] for row in self.written],
                    "positions": [row[1] for row in self.written],
                    "in_context": [row[2] for row in self.written],
                    "cited": [row[3] for row in self.written],
                },
            )


_DELETE_DOCUMENTS = text(
    """
    DELETE FROM audit_answer_documents AS d
    USING unnest(CAST(:documents AS uuid[]), CAST(:positions AS bigint[]))
          AS gone(document_id, asked_position)
    WHERE d.document_id = gone.document_id AND d.asked_position = gone.asked_position
    """
)
_UPSERT_DOCUMENTS = text(
    """
    INSERT INTO audit_answer_documents (document_id, asked_position, in_context, cited)
    SELECT * FROM unnest(
        CAST(:documents AS uuid[]), CAST(:positions AS bigint[]),
        CAST(:in_context AS boolean[]), CAST(:cited AS boolean[])
    )
    ON CONFLICT (document_id, asked_position)
    DO UPDATE SET in_context = EXCLUDED.in_context, cited = EXCLUDED.cited
    """
)

_answers = AuditAnswerRow.__table__
# One array parameter, so the statement is prepared once whatever the batch holds.
_EXISTING_ROWS = select(_answers).where(
    _answers.c.question_id == any_(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))
)
COLUMNS: tuple[str, ...] = tuple(column.name for column in _answers.columns)
_column_list = ", ".join(COLUMNS)
# The batch's rows travel as one JSON array, typed by the table's own row type: one
# parameter whatever the batch size, and no client-side statement per row.
_UPSERT_ANSWERS = text(
    f"""
    INSERT INTO audit_answers ({_column_list})
    SELECT {_column_list}
    FROM jsonb_populate_recordset(NULL::audit_answers, CAST(:rows AS jsonb))
    ON CONFLICT (question_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "question_id")}
    """  # noqa: S608  (column names from the model; the rows are one bound parameter)
)


_QUESTION_EVENTS = (
    QuestionAsked,
    ContextRetrieved,
    AnswerGenerated,
    AnswerFailed,
    AnswerFeedbackGiven,
)


def _json_default(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class BatchConflictError(Exception):
    """A batch the set-wise fold refuses (a question asked twice); replayed per event."""


def _fold(
    rows: dict[uuid.UUID, dict[str, Any]], recorded: RecordedEvent, event: object
) -> uuid.UUID | None:
    """Apply one decoded event to the rows in memory; the question it changed, if any.

    Plain dicts keyed by column; written back by AuditAnswersProjection.apply_batch.
    """
    row: dict[str, Any] | None
    match event:
        case QuestionAsked() as e:
            if e.question_id in rows:
                raise BatchConflictError(f"question {e.question_id} asked twice")
            row = dict.fromkeys(COLUMNS)
            row.update(
                question_id=e.question_id,
                asked_by=e.asked_by,
                asker_role=e.role,
                asked_at=recorded.recorded_at,
                question=e.question,
                top_k=e.top_k,
                status="pending",
                citations=[],
                citation_count=0,
                context_chunk_count=0,
                context=[],
                context_document_ids=[],
                cited_document_ids=[],
                feedback_count=0,
                asked_position=recorded.position,
                last_position=recorded.position,
            )
            rows[e.question_id] = row
            return e.question_id
        case ContextRetrieved() as e:
            if (row := _known(rows, e.question_id, recorded)) is None:
                return None
            context = to_json_value(e.chunks)
            row["context"] = context
            row["context_chunk_count"] = len(context)
            row["context_document_ids"] = _distinct_documents(context)
            row["removed_by_access_filter"] = e.removed_by_access_filter
            row["embedding_model"] = e.embedding_model
            row["retrieval_ms"] = e.timings_ms.get("retrieval_ms")
        case AnswerGenerated() as e:
            if (row := _known(rows, e.question_id, recorded)) is None:
                return None
            cited = set(e.citations)
            row["status"] = "no_context" if e.no_context else "answered"
            row["answer"] = e.answer
            row["model"] = e.model
            row["prompt_sha256"] = e.prompt_sha256
            row["citations"] = list(e.citations)
            row["citation_count"] = len(cited)
            row["cited_document_ids"] = _distinct_documents(row["context"], cited)
            row["prompt_tokens"] = e.usage.get("prompt_tokens")
            row["completion_tokens"] = e.usage.get("completion_tokens")
            _set_timings_of(row, e.timings_ms)
            row["answered_at"] = recorded.recorded_at
            row["mode"] = e.mode
            row["declined"] = e.declined
            if e.support is not None and not e.no_context:
                row["groundedness"] = float(e.support.groundedness)
                row["unsupported_sentences"] = e.support.unsupported_sentences
        case AnswerFailed() as e:
            if (row := _known(rows, e.question_id, recorded)) is None:
                return None
            row["status"] = "failed"
            row["answer"] = e.partial_answer or None
            row["model"] = e.model
            row["prompt_sha256"] = e.prompt_sha256
            row["failure_reason"] = f"{e.reason}: {e.detail}"
            _set_timings_of(row, e.timings_ms)
            row["answered_at"] = recorded.recorded_at
        case AnswerFeedbackGiven() as e:
            if (row := _known(rows, e.question_id, recorded)) is None:
                return None
            row["feedback_helpful"] = e.helpful
            row["feedback_count"] = row["feedback_count"] + 1
        case _:
            return None
    question_id: uuid.UUID = row["question_id"]
    return question_id


def _set_timings_of(row: dict[str, Any], timings: Mapping[str, int]) -> None:
    row["ttft_ms"] = timings.get("ttft_ms")
    row["llm_ms"] = timings.get("llm_ms")
    row["total_ms"] = timings.get("total_ms")
    if "retrieval_ms" in timings:
        row["retrieval_ms"] = timings["retrieval_ms"]


def _known(
    rows: dict[uuid.UUID, dict[str, Any]], question_id: uuid.UUID, recorded: RecordedEvent
) -> dict[str, Any] | None:
    row = rows.get(question_id)
    if row is None:
        _log_orphan(question_id, recorded)
        return None
    row["last_position"] = recorded.position
    return row


def _log_orphan(question_id: uuid.UUID, recorded: RecordedEvent) -> None:
    # Every question stream starts with QuestionAsked, so this is not expected;
    # skipping keeps one odd event from stopping the audit view for good.
    log.warning(
        "audit_answers_orphan_event",
        question_id=str(question_id),
        position=recorded.position,
        event_type=recorded.event_type,
    )


class AuditAnswersProjection(Projection):
    """Maintains `audit_answers`."""

    name = "audit_answers"
    event_types = frozenset(
        {
            "QuestionAsked",
            "ContextRetrieved",
            "AnswerGenerated",
            "AnswerFailed",
            "AnswerFeedbackGiven",
        }
    )

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Apply a batch set-wise; if it fails, replay it per event to name the culprit.

        The set-wise attempt runs in a savepoint, so a failed one leaves nothing behind
        and the per-event replay raises HandlerError at the event that cannot be applied,
        exactly as before.
        """
        try:
            async with session.begin_nested():
                await self.apply_batch(session, events)
        except Exception as exc:  # noqa: BLE001  (replayed below, which names the event)
            log.warning(
                "audit_answers_batch_replayed_per_event",
                first=events[0].position,
                last=events[-1].position,
                error=repr(exc),
            )
            await super().handle_batch(session, events)

    async def apply_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Fold the batch into its questions' rows in memory and write the changed ones."""
        decoded = [(recorded, registry.decode(recorded)) for recorded in events]
        question_ids = list(
            {e.question_id: None for _, e in decoded if isinstance(e, _QUESTION_EVENTS)}
        )
        if not question_ids:
            return
        found = await session.execute(_EXISTING_ROWS, {"ids": question_ids})
        rows: dict[uuid.UUID, dict[str, Any]] = {
            row.question_id: dict(row._mapping) for row in found
        }
        before = {
            q: document_flags(row["context_document_ids"], row["cited_document_ids"])
            for q, row in rows.items()
        }
        changed: dict[uuid.UUID, None] = {}
        for recorded, event in decoded:
            if (question_id := _fold(rows, recorded, event)) is not None:
                changed[question_id] = None
        if not changed:
            return
        await session.execute(
            _UPSERT_ANSWERS,
            {"rows": json.dumps([rows[q] for q in changed], default=_json_default)},
        )
        documents = _DocumentChanges()
        for q in changed:
            row = rows[q]
            after = document_flags(row["context_document_ids"], row["cited_document_ids"])
            documents.add(row["asked_position"], before.get(q, {}), after)
        await documents.write(session)

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Apply one question event: the batch fold over a batch of one."""
        await self.apply_batch(session, [recorded])

    async def reset(self, session: AsyncSession) -> None:
        """Empty the read model: the answers and their document rows."""
        await session.execute(delete(AuditAnswerDocumentRow))
        await session.execute(delete(AuditAnswerRow))
