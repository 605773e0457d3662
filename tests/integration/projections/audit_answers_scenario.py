"""A ledger of question events with every case the audit_answers projection folds.

Questions over a few documents, their events interleaved across streams as concurrent
askers make them, plus the odd cases: repeated and missing citations, a document's
chunks twice in one context, no context, failures with and without a partial answer,
changed feedback, an answer recorded before its context, a context replaced after the
answer (so a cited document can be out of the context), events of a question never
asked.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from ragledger.core.ids import uuid7
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.questions import (
    AnswerFailed,
    AnswerFeedbackGiven,
    AnswerGenerated,
    ContextChunk,
    ContextRetrieved,
    QuestionAsked,
    question_stream,
)

META = EventMetadata(actor_id="tester", actor_role="test")


def chunk(n: int, document_id: uuid.UUID) -> ContextChunk:
    """Block `n` of the context, a chunk of `document_id`."""
    return ContextChunk(
        n=n,
        chunk_id=uuid.uuid4(),
        document_id=document_id,
        version=1 + n % 2,
        chunk_index=n,
        title="t",
        heading_path=("t", f"h{n}"),
        text_sha256=f"{n:064x}",
        vector_rank=n,
        text_rank=None if n % 2 else n,
        similarity="0.5" if n % 2 else None,
        fused_score="0.01",
    )


def asked(
    question_id: uuid.UUID, asker: uuid.UUID, text: str = "What does it say?"
) -> QuestionAsked:
    """QuestionAsked by `asker`."""
    return QuestionAsked(
        question_id=question_id,
        question=text,
        top_k=5,
        document_ids=(),
        asked_by=asker,
        role="employee",
        groups=("hr",),
    )


def context(
    question_id: uuid.UUID, *documents: uuid.UUID, retrieval_ms: int = 5
) -> ContextRetrieved:
    """ContextRetrieved with one block per document given (repeats allowed)."""
    return ContextRetrieved(
        question_id=question_id,
        chunks=tuple(chunk(n, d) for n, d in enumerate(documents, start=1)),
        embedding_model="m",
        settings={},
        candidates_considered=10,
        removed_by_access_filter=len(documents) % 3,
        timings_ms={"retrieval_ms": retrieval_ms},
    )


def answered(
    question_id: uuid.UUID, citations: tuple[int, ...] = (), *, no_context: bool = False
) -> AnswerGenerated:
    """AnswerGenerated citing `citations` (block numbers)."""
    timings = {"total_ms": 10, "ttft_ms": 3, "llm_ms": 7}
    if citations:
        timings["retrieval_ms"] = 4
    return AnswerGenerated(
        question_id=question_id,
        answer="An answer" + "".join(f" [{n}]" for n in citations),
        model="m",
        prompt_sha256="1" * 64,
        citations=citations,
        usage={"prompt_tokens": 10, "completion_tokens": 5},
        timings_ms=timings,
        no_context=no_context,
    )


def failed(question_id: uuid.UUID, partial: str = "") -> AnswerFailed:
    """AnswerFailed with an optional partial answer."""
    return AnswerFailed(
        question_id=question_id,
        reason="llm_error",
        detail="boom",
        partial_answer=partial,
        model="m",
        prompt_sha256=None,
        timings_ms={"total_ms": 9},
    )


def feedback(question_id: uuid.UUID, helpful: bool, asker: uuid.UUID) -> AnswerFeedbackGiven:
    """AnswerFeedbackGiven by `asker`."""
    return AnswerFeedbackGiven(question_id, helpful, None, asker)


@dataclass
class Scenario:
    """What was appended: the documents, askers, question ids and the number of events."""

    documents: list[uuid.UUID]
    askers: list[uuid.UUID]
    questions: list[uuid.UUID] = field(default_factory=list)
    events: int = 0


def question_events(
    rng: random.Random, question_id: uuid.UUID, asker: uuid.UUID, documents: list[uuid.UUID]
) -> list[object]:
    """One question's events in stream order, drawn to cover the projection's cases."""
    events: list[object] = [asked(question_id, asker, f"q {rng.random():.6f}")]
    shape = rng.random()
    chosen = [rng.choice(documents) for _ in range(rng.randint(1, 4))]
    blocks = len(chosen)
    citations = tuple(rng.choice(range(1, blocks + 2)) for _ in range(rng.randint(0, 3)))
    if shape < 0.08:
        events.append(answered(question_id, no_context=True))
    elif shape < 0.16:
        events += [context(question_id, *chosen), failed(question_id, rng.choice(["", "part"]))]
    elif shape < 0.22:
        # The answer recorded before its context: nothing to cite yet.
        events += [answered(question_id, citations), context(question_id, *chosen)]
    elif shape < 0.28:
        # The context replaced after the answer: the cited documents stay as they were.
        events += [
            context(question_id, *chosen),
            answered(question_id, citations),
            context(question_id, rng.choice(documents), retrieval_ms=7),
        ]
    elif shape < 0.33:
        events.append(context(question_id, *chosen))  # still pending
    else:
        events += [context(question_id, *chosen), answered(question_id, citations)]
    for _ in range(rng.choice([0, 0, 1, 2])):
        events.append(feedback(question_id, rng.random() < 0.5, asker))
    return events


async def append_scenario(
    sessionmaker, *, seed: int, questions: int, documents: list[uuid.UUID] | None = None
) -> Scenario:
    """Append `questions` questions, their events interleaved, plus an orphan event.

    The questions draw from `documents` (four new ones when not given).
    """
    rng = random.Random(seed)
    scenario = Scenario(
        documents=documents or [uuid.uuid4() for _ in range(4)],
        askers=[uuid.uuid4() for _ in range(3)],
    )
    pending: list[tuple[uuid.UUID, list[object]]] = []
    for _ in range(questions):
        question_id = uuid7()
        scenario.questions.append(question_id)
        pending.append(
            (
                question_id,
                question_events(rng, question_id, rng.choice(scenario.askers), scenario.documents),
            )
        )
    never_asked = uuid7()
    pending.append((never_asked, [feedback(never_asked, True, scenario.askers[0])]))
    # Streams advance in a random interleaving, one or two events per append.
    while pending:
        index = rng.randrange(len(pending))
        question_id, events = pending[index]
        take = rng.choice([1, 1, 2])
        batch, rest = events[:take], events[take:]
        async with sessionmaker() as session, session.begin():
            await store.append(session, question_stream(question_id), batch, metadata=META)
        scenario.events += len(batch)
        if rest:
            pending[index] = (question_id, rest)
        else:
            pending.pop(index)
    return scenario
