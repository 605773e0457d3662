"""HTTP shapes of the audit views: the ledger page, answers, one question, one document."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import Query
from fastapi_pagination.cursor import CursorPage, CursorParams
from pydantic import BaseModel, ConfigDict, Field

from ragledger.core.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ragledger.schemas.pagination import Page
from ragledger.schemas.provenance import LedgerRef, ProvenancePublic


class AuditEventPublic(BaseModel):
    """One ledger event exactly as stored (payload not upcast), hashes in hex."""

    position: int
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    recorded_at: datetime
    payload: dict[str, Any]
    metadata: dict[str, Any]
    prev_hash: str
    hash: str


class AuditCursorParams(CursorParams):
    """Cursor and size of the ledger view; cursors are opaque and signed by the server."""

    cursor: str | None = Query(
        None,
        description=(
            "next_page or previous_page of an earlier response, with the same filters and "
            "order; omit for the first page. Altered or foreign cursors get 400."
        ),
    )
    size: int = Query(
        DEFAULT_PAGE_SIZE,
        description=f"Events per page; values outside 1..{MAX_PAGE_SIZE} are clamped.",
    )


class AuditEventPage(CursorPage[AuditEventPublic]):
    """fastapi-pagination's cursor page of ledger events, with signed keyset cursors.

    `total` is always null: counting a filtered ledger costs as much as reading it.
    """

    __params_type__ = AuditCursorParams

    # The library's base page declares `total: int`; this page never counts.
    total: int | None = Field(None, description="Not computed (always null).")  # type: ignore[assignment]


class AuditAnswerPublic(BaseModel):
    """A question with its outcome, as the `audit_answers` projection holds it."""

    model_config = ConfigDict(from_attributes=True)

    question_id: uuid.UUID
    asked_by: uuid.UUID
    asker_role: str
    asked_at: datetime
    question: str
    top_k: int
    status: str = Field(description="pending, answered, no_context or failed")
    answer: str | None
    model: str | None
    failure_reason: str | None
    embedding_model: str | None
    retrieval_ms: int | None
    ttft_ms: int | None
    llm_ms: int | None
    total_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    citations: list[int] = Field(description="Context block numbers the answer cited.")
    citation_count: int
    context_chunk_count: int
    removed_by_access_filter: int | None
    context_document_ids: list[uuid.UUID] = Field(description="Documents in the context.")
    cited_document_ids: list[uuid.UUID] = Field(description="Documents the answer cited.")
    prompt_sha256: str | None
    feedback_helpful: bool | None = Field(description="The asker's latest feedback.")
    feedback_count: int
    answered_at: datetime | None
    asked_position: int
    last_position: int
    mode: str | None = Field(None, description="extractive or generative")
    groundedness: float | None = Field(
        None,
        description="Share (0-1) of the answer's checked sentences that its context "
        "supports; null for unchecked answers",
    )
    unsupported_sentences: int | None = None
    declined: str | None = Field(
        None, description="Why the documents were said not to cover the question"
    )


AuditAnswerPage = Page[AuditAnswerPublic]


class AuditReadPublic(BaseModel):
    """An audit read of a question (an AuditViewed event aimed at it)."""

    position: int
    recorded_at: datetime
    auditor_id: uuid.UUID
    actor_role: str | None
    view: str
    request_id: str | None
    hash: str


class AuditAnswerStory(ProvenancePublic):
    """One question's whole story: its events, the exact context, the answer, its readers."""

    events: list[AuditEventPublic] = Field(description="The question's stream, in full.")
    source_events: list[LedgerRef] = Field(
        description="The DocumentChunked events the context text was taken from."
    )
    reads: list[AuditReadPublic] = Field(
        description="Audit reads of this question before this one, oldest first."
    )


class DocumentVersionHistory(BaseModel):
    """One version of a document: its upload and its ingestion outcome."""

    model_config = ConfigDict(from_attributes=True)

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
    status: str = Field(description="pending, indexed or failed")
    char_count: int | None
    text_sha256: str | None
    chunk_count: int | None
    failure_stage: str | None
    failure_reason: str | None
    outcome_at: datetime | None
    outcome_position: int | None


class AccessChangePublic(BaseModel):
    """A change of the groups that may read the document."""

    model_config = ConfigDict(from_attributes=True)

    old_groups: list[str]
    new_groups: list[str]
    changed_by: uuid.UUID | None
    at: datetime
    position: int


class RetractionPublic(BaseModel):
    """The document's withdrawal."""

    model_config = ConfigDict(from_attributes=True)

    retracted_by: uuid.UUID | None
    at: datetime
    position: int


class CitingAnswerPublic(BaseModel):
    """An answer whose context held the document, with the versions it used and cited."""

    model_config = ConfigDict(from_attributes=True)

    question_id: uuid.UUID
    asked_by: uuid.UUID
    asked_at: datetime
    status: str
    model: str | None
    versions_in_context: list[int]
    cited_versions: list[int]
    asked_position: int


class DocumentHistoryPublic(BaseModel):
    """A document's versions, access changes, retraction, and the answers that used it."""

    document_id: uuid.UUID
    versions: list[DocumentVersionHistory]
    access_changes: list[AccessChangePublic]
    retraction: RetractionPublic | None
    events: list[LedgerRef] = Field(description="Every event of the document's stream.")
    answers: list[CitingAnswerPublic] = Field(description="Newest first.")
    answer_count: int = Field(description="All answers whose context held the document.")
    answers_truncated: bool
    answers_projected_to: int = Field(
        description="Ledger position the audit_answers projection has reached."
    )
