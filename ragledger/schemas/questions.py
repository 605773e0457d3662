"""HTTP shapes of questions, answers, feedback and search."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class QuestionCreate(BaseModel):
    """A question; the answer streams back as Server-Sent Events."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=100_000)
    top_k: int | None = Field(default=None, ge=1, le=100)
    document_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)
    mode: Literal["extractive", "generative"] | None = Field(
        default=None,
        description=(
            "extractive: quote the documents' sentences (no language model); generative: "
            "the configured LLM, checked against the context. Default: ANSWER_MODE, else "
            "generative when LLM_MODEL is set, else extractive."
        ),
    )


class SearchCreate(BaseModel):
    """A search over the documents you may read."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000)
    top_k: int | None = Field(default=None, ge=1, le=100)


class SearchHit(BaseModel):
    """One chunk found by a search."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    version: int
    heading_path: list[str]
    text: str
    score: float
    similarity: float | None
    vector_rank: int | None
    text_rank: int | None


class SearchPublic(BaseModel):
    """Search results, best first."""

    search_id: uuid.UUID
    results: list[SearchHit]


class FeedbackCreate(BaseModel):
    """Whether an answer helped."""

    model_config = ConfigDict(extra="forbid")

    helpful: bool
    comment: str | None = Field(default=None, max_length=2000)


class ContextPublic(BaseModel):
    """A context block exactly as the model saw it, rebuilt from the ledger."""

    n: int
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    version: int
    title: str | None = Field(description="None when withheld")
    heading_path: list[str]
    text: str | None = Field(description="None when withheld or not found in the ledger")
    text_sha256: str
    text_verified: bool
    vector_rank: int | None
    text_rank: int | None
    similarity: str | None
    fused_score: str
    chunked_at_position: int | None
    withheld: str | None = Field(
        default=None,
        description="Why title, headings and text are not shown to you now: "
        "`access_revoked` (you may no longer read the document) or `retracted`",
    )


class LedgerRef(BaseModel):
    """An event involved in the answer."""

    position: int
    event_type: str
    stream_id: str
    recorded_at: datetime
    hash: str


class AnswerPublic(BaseModel):
    """A question, its answer and its full provenance."""

    answer_id: uuid.UUID
    question_id: uuid.UUID
    question: str
    asked_by: uuid.UUID
    asked_at: datetime
    status: str = Field(description="pending, answered, no_context or failed")
    answer: str | None
    answer_withheld: str | None = Field(
        default=None,
        description="Why the answer is not shown to you now: a document in its context "
        "is no longer readable by you (`access_revoked`, `retracted`)",
    )
    failure_reason: str | None
    model: str | None
    usage: dict[str, int]
    timings_ms: dict[str, int] = Field(
        description="Admins and auditors: every timing; others: the model's (ttft_ms, llm_ms)"
    )
    citations: list[int]
    prompt_sha256: str | None
    prompt_verified: bool | None
    removed_by_access_filter: int | None = Field(description="Admins and auditors only")
    retrieval_settings: dict[str, str]
    context: list[ContextPublic]
    feedback: list[dict[str, object]]
    events: list[LedgerRef]
