"""The `audit_answers` projection: every question with its outcome, for the audit views.

One row per question, keyed by its id, folded from the question's own stream. Every
value comes from the events (timestamps are `recorded_at`, never the clock), so a
rebuild yields the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from sqlalchemy import delete
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
from ragledger.models.audit import AuditAnswerRow
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


def _set_timings(row: AuditAnswerRow, timings: Mapping[str, int]) -> None:
    row.ttft_ms = timings.get("ttft_ms")
    row.llm_ms = timings.get("llm_ms")
    row.total_ms = timings.get("total_ms")
    if "retrieval_ms" in timings:
        row.retrieval_ms = timings["retrieval_ms"]


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

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Apply one question event."""
        match registry.decode(recorded):
            case QuestionAsked() as e:
                session.add(
                    AuditAnswerRow(
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
                )
            case ContextRetrieved() as e:
                if (row := await self._row(session, e.question_id, recorded)) is None:
                    return
                context = to_json_value(e.chunks)
                row.context = context
                row.context_chunk_count = len(context)
                row.context_document_ids = _distinct_documents(context)
                row.removed_by_access_filter = e.removed_by_access_filter
                row.embedding_model = e.embedding_model
                row.retrieval_ms = e.timings_ms.get("retrieval_ms")
            case AnswerGenerated() as e:
                if (row := await self._row(session, e.question_id, recorded)) is None:
                    return
                cited = set(e.citations)
                row.status = "no_context" if e.no_context else "answered"
                row.answer = e.answer
                row.model = e.model
                row.prompt_sha256 = e.prompt_sha256
                row.citations = list(e.citations)
                row.citation_count = len(cited)
                row.cited_document_ids = _distinct_documents(row.context, cited)
                row.prompt_tokens = e.usage.get("prompt_tokens")
                row.completion_tokens = e.usage.get("completion_tokens")
                _set_timings(row, e.timings_ms)
                row.answered_at = recorded.recorded_at
            case AnswerFailed() as e:
                if (row := await self._row(session, e.question_id, recorded)) is None:
                    return
                row.status = "failed"
                row.answer = e.partial_answer or None
                row.model = e.model
                row.prompt_sha256 = e.prompt_sha256
                row.failure_reason = f"{e.reason}: {e.detail}"
                _set_timings(row, e.timings_ms)
                row.answered_at = recorded.recorded_at
            case AnswerFeedbackGiven() as e:
                if (row := await self._row(session, e.question_id, recorded)) is None:
                    return
                # The latest judgement counts; the count shows whether the asker changed it.
                row.feedback_helpful = e.helpful
                row.feedback_count = row.feedback_count + 1
            case _:
                return
        # Flushed per event: the next event of the batch may be about the same question.
        await session.flush()

    @staticmethod
    async def _row(
        session: AsyncSession, question_id: uuid.UUID, recorded: RecordedEvent
    ) -> AuditAnswerRow | None:
        row = await session.get(AuditAnswerRow, question_id)
        if row is None:
            # Every question stream starts with QuestionAsked, so this is not expected;
            # skipping keeps one odd event from stopping the audit view for good.
            log.warning(
                "audit_answers_orphan_event",
                question_id=str(question_id),
                position=recorded.position,
                event_type=recorded.event_type,
            )
            return None
        row.last_position = recorded.position
        return row

    async def reset(self, session: AsyncSession) -> None:
        """Empty the read model."""
        await session.execute(delete(AuditAnswerRow))
