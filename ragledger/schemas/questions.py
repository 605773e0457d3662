"""HTTP shapes of questions, answers, feedback and search."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragledger.schemas.provenance import LedgerRef, ProvenancePublic


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


class AnswerPublic(ProvenancePublic):
    """A question, its answer and its full provenance."""

    answer_id: uuid.UUID
    answer_withheld: str | None = Field(
        default=None,
        description="Why the answer is not shown to you now: a document in its context "
        "is no longer readable by you (`access_revoked`, `retracted`)",
    )
    timings_ms: dict[str, int] = Field(
        description="Admins and auditors: every timing; others: the model's (ttft_ms, llm_ms)"
    )
    removed_by_access_filter: int | None = Field(description="Admins and auditors only")
    events: list[LedgerRef]
