"""Question and answer events. The question text is personal data: field `question`.

A question is the stream `question-<id>`; its answer has the same id. Scores are
recorded as decimal strings (the ledger holds no floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ragledger.events.registry import event_type, registry


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


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    """How one sentence of an answer is supported (see services/answer_support.py).

    `start`/`end` locate the sentence in the answer; `score` is its best support over
    the context blocks, `best_block` that block; `unsupported_citations` the blocks it
    cites that do not support it; `relevance` an extractive quote's score against the
    question. Sentences too short to judge have `checked` false.
    """

    start: int
    end: int
    cited: tuple[int, ...]
    checked: bool
    supported: bool
    score: str
    best_block: int | None
    unsupported_citations: tuple[int, ...]
    relevance: str | None


@dataclass(frozen=True, slots=True)
class AnswerSupport:
    """An answer checked against its context: per sentence, and overall."""

    method: str
    groundedness: str
    supported_sentences: int
    unsupported_sentences: int
    citations_verified: tuple[int, ...]
    citations_unsupported: tuple[int, ...]
    sentences: tuple[SentenceSupport, ...]


@event_type(version=2)
@dataclass(frozen=True, slots=True)
class AnswerGenerated:
    """The answer, complete: text, model, usage, timings, citations, prompt hash.

    Version 2 adds the answer's `mode` (extractive or generative), its `support` (None
    for the fixed no-context answer), `declined` (why the platform answered that the
    documents do not cover the question, else None) and `generated_answer` (a declined
    generative answer's own text, which `answer` replaces).
    """

    question_id: UUID
    answer: str
    model: str
    prompt_sha256: str | None
    citations: tuple[int, ...]
    usage: dict[str, int]
    timings_ms: dict[str, int]
    no_context: bool
    mode: str = "generative"
    support: AnswerSupport | None = None
    declined: str | None = None
    generated_answer: str | None = None


@registry.upcaster("AnswerGenerated", 1)
def _answer_generated_v1(payload: dict[str, Any]) -> dict[str, Any]:
    # Before v2 every answer came from the LLM and nothing was checked or declined.
    return {
        **payload,
        "mode": "generative",
        "support": None,
        "declined": None,
        "generated_answer": None,
    }


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
