"""A question a crash left without an outcome gets AnswerFailed(interrupted), exactly once."""

from __future__ import annotations

import asyncio
import uuid

from ragledger.core.ids import uuid7
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.questions import AnswerGenerated, QuestionAsked, question_stream
from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.runner import run_until_caught_up
from ragledger.services.interrupted_answers import INTERRUPTED, fail_interrupted_answers


async def _ask(db, *, answered: bool = False) -> uuid.UUID:
    question_id = uuid7()
    events: list[object] = [
        QuestionAsked(
            question_id=question_id,
            question="How many days of leave?",
            top_k=5,
            document_ids=(),
            asked_by=uuid.uuid4(),
            role="employee",
            groups=("hr",),
        )
    ]
    if answered:
        events.append(
            AnswerGenerated(
                question_id=question_id,
                answer="Thirty [1].",
                model="extractive",
                prompt_sha256=None,
                citations=(1,),
                usage={},
                timings_ms={},
                no_context=False,
            )
        )
    async with db.sessionmaker() as session, session.begin():
        await store.append(
            session,
            question_stream(question_id),
            events,
            metadata=EventMetadata(actor_id="u", correlation_id="req-1"),
        )
    assert await run_until_caught_up(db.engine, AuditAnswersProjection())
    return question_id


async def _outcomes(db, question_id: uuid.UUID) -> list[tuple[str, dict]]:
    async with db.sessionmaker() as session:
        events = await store.read_stream(session, question_stream(question_id))
    return [
        (e.event_type, e.payload)
        for e in events
        if e.event_type in {"AnswerGenerated", "AnswerFailed"}
    ]


async def test_an_old_question_without_outcome_fails_once_with_two_sweepers(db) -> None:
    stuck = await _ask(db)
    answered = await _ask(db, answered=True)

    # Two processes sweep at the same moment: one outcome, appended by one of them.
    first, second = await asyncio.gather(
        fail_interrupted_answers(db.sessionmaker, older_than_s=0),
        fail_interrupted_answers(db.sessionmaker, older_than_s=0),
    )
    assert sorted([*first.failed, *second.failed]) == [stuck]
    [(kind, payload)] = await _outcomes(db, stuck)
    assert kind == "AnswerFailed"
    assert payload["reason"] == INTERRUPTED
    assert "no outcome was recorded" in payload["detail"]
    assert [kind for kind, _ in await _outcomes(db, answered)] == ["AnswerGenerated"]

    # The projection sees it settled, and a later sweep adds nothing.
    assert await run_until_caught_up(db.engine, AuditAnswersProjection())
    again = await fail_interrupted_answers(db.sessionmaker, older_than_s=0)
    assert again.failed == ()
    assert len(await _outcomes(db, stuck)) == 1

    async with db.sessionmaker() as session:
        [failed] = [
            e
            for e in await store.read_stream(session, question_stream(stuck))
            if e.event_type == "AnswerFailed"
        ]
        asked = (await store.read_stream(session, question_stream(stuck)))[0]
    assert failed.metadata["actor_id"] == "system:interrupted_answers"
    assert failed.metadata["causation_id"] == str(asked.event_id)


async def test_a_young_question_is_left_alone(db) -> None:
    young = await _ask(db)
    result = await fail_interrupted_answers(db.sessionmaker, older_than_s=3600)
    assert result.failed == ()
    assert await _outcomes(db, young) == []


async def test_a_stale_read_model_cannot_cause_a_second_outcome(db) -> None:
    """The read model still says pending, but the stream has its answer: nothing appended."""
    question_id = await _ask(db)
    async with db.sessionmaker() as session, session.begin():
        await store.append(
            session,
            question_stream(question_id),
            [
                AnswerGenerated(
                    question_id=question_id,
                    answer="Thirty [1].",
                    model="extractive",
                    prompt_sha256=None,
                    citations=(1,),
                    usage={},
                    timings_ms={},
                    no_context=False,
                )
            ],
            expected_version=1,
        )
    result = await fail_interrupted_answers(db.sessionmaker, older_than_s=0)
    assert result.failed == ()
    assert result.skipped == 1
    assert [kind for kind, _ in await _outcomes(db, question_id)] == ["AnswerGenerated"]
