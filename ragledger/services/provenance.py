"""An answer's provenance rebuilt from the ledger alone.

The context text comes from the DocumentChunked event of the version that was used,
so it is exact even after the document was replaced or retracted; each block's sha256
is checked against ContextRetrieved, and the prompt is rebuilt and its hash compared.

Access is checked when the provenance is read, not only when the answer was given: a
reader who may no longer read a block's document (moved to another group, retracted)
gets the block's ids, version and hashes but not its title, headings or text, with the
reason in `withheld`, and the answer itself is withheld too (it is made of that text).
Admins and auditors see everything, and only they see timings beyond the model's, cache
flags and the access filter's count (services/disclosure.py).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.documents import DocumentChunked, document_stream
from ragledger.events.envelope import RecordedEvent
from ragledger.events.questions import (
    AnswerFailed,
    AnswerFeedbackGiven,
    AnswerGenerated,
    ContextRetrieved,
    QuestionAsked,
    question_stream,
)
from ragledger.events.registry import registry
from ragledger.services.disclosure import (
    visible_removed_count,
    visible_settings,
    visible_timings,
)
from ragledger.services.document_access import current_access, withheld_reason
from ragledger.services.documents import Reader
from ragledger.services.errors import NotFoundError, PermissionDeniedError
from ragledger.services.prompting import ContextBlock, build_prompt, build_prompt_v1


@dataclass(slots=True)
class Provenance:
    """Everything the ledger says about one question."""

    question_id: uuid.UUID
    question: str
    asked_by: uuid.UUID
    asked_at: datetime
    status: str = "pending"
    answer: str | None = None
    answer_withheld: str | None = None
    failure_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    timings_ms: dict[str, int] = field(default_factory=dict)
    citations: list[int] = field(default_factory=list)
    prompt_sha256: str | None = None
    prompt_verified: bool | None = None
    removed_by_access_filter: int | None = None
    retrieval_settings: dict[str, str] = field(default_factory=dict)
    context: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, object]] = field(default_factory=list)
    events: list[RecordedEvent] = field(default_factory=list)


async def load_provenance(
    session: AsyncSession, question_id: uuid.UUID, reader: Reader
) -> Provenance:
    """The provenance of a question; 404 if unknown, 403 unless asker, auditor or admin."""
    history = await store.read_stream(session, question_stream(question_id))
    if not history:
        raise NotFoundError("answer not found")
    asked = registry.decode(history[0])
    assert isinstance(asked, QuestionAsked)
    if not reader.sees_everything and reader.user_id != asked.asked_by:
        raise PermissionDeniedError(
            "only the asker, auditors and admins may read this answer",
            reason="not_the_asker",
            user_id=reader.user_id,
        )
    result = Provenance(
        question_id=question_id,
        question=asked.question,
        asked_by=asked.asked_by,
        asked_at=history[0].recorded_at,
        events=list(history),
    )
    for recorded in history[1:]:
        match registry.decode(recorded):
            case ContextRetrieved() as e:
                result.removed_by_access_filter = e.removed_by_access_filter
                result.retrieval_settings = dict(e.settings)
                result.context = await _rebuild_context(session, e, result.events)
            case AnswerGenerated() as e:
                result.status = "no_context" if e.no_context else "answered"
                result.answer = e.answer
                result.model = e.model
                result.usage = dict(e.usage)
                result.timings_ms = dict(e.timings_ms)
                result.citations = list(e.citations)
                result.prompt_sha256 = e.prompt_sha256
            case AnswerFailed() as e:
                result.status = "failed"
                result.answer = e.partial_answer or None
                result.failure_reason = f"{e.reason}: {e.detail}"
                result.model = e.model
                result.timings_ms = dict(e.timings_ms)
                result.prompt_sha256 = e.prompt_sha256
            case AnswerFeedbackGiven() as e:
                result.feedback.append(
                    {
                        "helpful": e.helpful,
                        "comment": e.comment,
                        "given_by": str(e.given_by),
                        "at": recorded.recorded_at.isoformat(),
                    }
                )
            case _:
                pass
    if result.prompt_sha256 and result.context:
        blocks = [
            ContextBlock(c["n"], c["title"], c["version"], tuple(c["heading_path"]), c["text"])
            for c in result.context
            if c["text"] is not None
        ]
        if len(blocks) == len(result.context):
            rebuilt = build_prompt(result.question, blocks, question_id=result.question_id)
            # Answers recorded before the tagged layout were prompted with the old one.
            result.prompt_verified = result.prompt_sha256 in {
                rebuilt.sha256,
                build_prompt_v1(result.question, blocks).sha256,
            }
    result.events.sort(key=lambda e: e.position)
    await _apply_current_access(session, result, reader)
    return result


async def _apply_current_access(session: AsyncSession, result: Provenance, reader: Reader) -> None:
    """Withhold what `reader` may no longer read, and what only admins and auditors see."""
    everything = reader.sees_everything
    result.timings_ms = visible_timings(result.timings_ms, sees_everything=everything)
    result.retrieval_settings = visible_settings(
        result.retrieval_settings, sees_everything=everything
    )
    result.removed_by_access_filter = visible_removed_count(
        result.removed_by_access_filter, sees_everything=everything
    )
    if everything or not result.context:
        return
    access = await current_access(session, {block["document_id"] for block in result.context})
    for block in result.context:
        reason = withheld_reason(
            access.get(block["document_id"]), sees_everything=False, groups=reader.groups
        )
        if reason is None:
            continue
        block.update(withheld=reason, title=None, heading_path=[], text=None)
        if result.answer_withheld is None:
            result.answer_withheld = reason
    if result.answer_withheld is not None:
        result.answer = None


async def _rebuild_context(
    session: AsyncSession, context: ContextRetrieved, involved: list[RecordedEvent]
) -> list[dict[str, Any]]:
    chunk_texts: dict[uuid.UUID, tuple[str, int]] = {}
    wanted = {(c.document_id, c.version) for c in context.chunks}
    for document_id, version in sorted(wanted, key=str):
        for recorded in await store.read_stream(session, document_stream(document_id)):
            if recorded.event_type != "DocumentChunked":
                continue
            chunked = registry.decode(recorded)
            assert isinstance(chunked, DocumentChunked)
            if chunked.version != version:
                continue
            involved.append(recorded)
            for chunk in chunked.chunks:
                chunk_texts[chunk.chunk_id] = (chunk.text, recorded.position)
    blocks = []
    for c in context.chunks:
        text, position = chunk_texts.get(c.chunk_id, (None, None))
        blocks.append(
            {
                "n": c.n,
                "chunk_id": c.chunk_id,
                "document_id": c.document_id,
                "version": c.version,
                "title": c.title,
                "heading_path": list(c.heading_path),
                "text": text,
                "text_sha256": c.text_sha256,
                "text_verified": text is not None
                and hashlib.sha256(text.encode("utf-8")).hexdigest() == c.text_sha256,
                "vector_rank": c.vector_rank,
                "text_rank": c.text_rank,
                "similarity": c.similarity,
                "fused_score": c.fused_score,
                "chunked_at_position": position,
                "withheld": None,
            }
        )
    return blocks
