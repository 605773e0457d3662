"""Question and answer events. The question text is personal data: field `question`.

A question is the stream `question-<id>`; its answer has the same id. Scores are
recorded as decimal strings (the ledger holds no floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ragledger.events.registry import event_type


def question_stream(question_id: UUID) -> str:
    """The stream of one question and its answer."""
    return f"question-{question_id}"


@event_type
@dataclass(frozen=True, slots=True)
class QuestionAsked:
    """Someone asked a question, with the reading rights they had at that moment."""

    question_id: UUID
    question: str
    top_k: int
    document_ids: tuple[UUID, ...]
    asked_by: UUID
    role: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextChunk:
    """One chunk given to the model as context block `n`."""

    n: int
    chunk_id: UUID
    document_id: UUID
    version: int
    chunk_index: int
    title: str
    heading_path: tuple[str, ...]
    text_sha256: str
    vector_rank: int | None
    text_rank: int | None
    similarity: str | None
    fused_score: str


@event_type
@dataclass(frozen=True, slots=True)
class ContextRetrieved:
    """The exact context retrieved for a question, and how it was retrieved."""

    question_id: UUID
    chunks: tuple[ContextChunk, ...]
    embedding_model: str
    settings: dict[str, str]
    candidates_considered: int
    removed_by_access_filter: int
    timings_ms: dict[str, int]


@event_type
@dataclass(frozen=True, slots=True)
class AnswerGenerated:
    """The answer, complete: text, model, usage, timings, citations, prompt hash."""

    question_id: UUID
    answer: str
    model: str
    prompt_sha256: str | None
    citations: tuple[int, ...]
    usage: dict[str, int]
    timings_ms: dict[str, int]
    no_context: bool


@event_type
@dataclass(frozen=True, slots=True)
class AnswerFailed:
    """No complete answer: why, and what had been sent to the asker already."""

    question_id: UUID
    reason: str
    detail: str
    partial_answer: str
    model: str
    prompt_sha256: str | None
    timings_ms: dict[str, int]


@event_type
@dataclass(frozen=True, slots=True)
class AnswerFeedbackGiven:
    """The asker said whether the answer helped."""

    question_id: UUID
    helpful: bool
    comment: str | None
    given_by: UUID


@event_type
@dataclass(frozen=True, slots=True)
class SearchPerformed:
    """Someone searched the documents; the query text is personal data: field `query`."""

    search_id: UUID
    query: str
    top_k: int
    chunk_ids: tuple[UUID, ...]
    searched_by: UUID
    removed_by_access_filter: int
