"""Read model of the `audit_answers` projection: one row per question and its outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Double, Integer, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from ragledger.models.base import Base


class AuditAnswerRow(Base):
    """A question with its status, model, timings, citations and the exact context.

    `context` is ContextRetrieved's chunk list as recorded (ids, document versions, text
    hashes, scores); `context_document_ids` are the documents in that context and
    `cited_document_ids` those whose blocks the answer cited.
    """

    __tablename__ = "audit_answers"

    question_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    asked_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    asker_role: Mapped[str] = mapped_column(Text)
    asked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    question: Mapped[str] = mapped_column(Text)
    top_k: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    retrieval_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    llm_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    citations: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    citation_count: Mapped[int] = mapped_column(Integer)
    context_chunk_count: Mapped[int] = mapped_column(Integer)
    removed_by_access_filter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    context: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    context_document_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    cited_document_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    prompt_sha256: Mapped[str | None] = mapped_column(Text, nullable=True)
    feedback_helpful: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    feedback_count: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    asked_position: Mapped[int] = mapped_column(BigInteger, unique=True)
    last_position: Mapped[int] = mapped_column(BigInteger)
    # From AnswerGenerated v2 (migration 0016): NULL for older answers and failures.
    mode: Mapped[str | None] = mapped_column(Text, nullable=True)
    groundedness: Mapped[float | None] = mapped_column(Double, nullable=True)
    unsupported_sentences: Mapped[int | None] = mapped_column(Integer, nullable=True)
    declined: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditAnswerDocumentRow(Base):
    """A document an answer's context held or its answer cited, for the document filter.

    One row per (document, question) for every document in the question's
    `context_document_ids` or `cited_document_ids`, kept with its audit_answers row by
    the same projection, so that the answers of a popular document are one range of
    (document_id, asked_position) instead of tens of thousands of wide rows.
    """

    __tablename__ = "audit_answer_documents"

    document_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    asked_position: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    in_context: Mapped[bool] = mapped_column(Boolean)
    cited: Mapped[bool] = mapped_column(Boolean)


class AuditDocumentStreamRow(Base):
    """A stream whose ContextRetrieved (at `position`) held one of a document's chunks."""

    __tablename__ = "audit_document_streams"

    stream_id: Mapped[str] = mapped_column(Text, primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)


class AuditDocumentEventRow(Base):
    """An event of a stream linked to a document (see AuditDocumentStreamRow)."""

    __tablename__ = "audit_document_events"

    document_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True)
