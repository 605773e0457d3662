"""A question's terminal event lands even when the database refuses it for a moment."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.questions import AnswerFailed, ContextRetrieved, QuestionAsked
from ragledger.services import answering
from ragledger.services.documents import Reader


def _request() -> answering.QuestionRequest:
    return answering.QuestionRequest(
        question_id=uuid.uuid4(),
        question="How many days of leave?",
        top_k=3,
        document_ids=(),
        reader=Reader(user_id=uuid.uuid4(), role="employee", groups=("hr",)),
        asker_id=uuid.uuid4(),
        metadata=EventMetadata(actor_id="test", actor_role="employee"),
    )


async def _ask(record: answering.QuestionRecord) -> None:
    request = record.request
    await record.append(
        QuestionAsked(
            question_id=request.question_id,
            question=request.question,
            top_k=3,
            document_ids=(),
            asked_by=request.asker_id,
            role="employee",
            groups=("hr",),
        ),
    )


def _failed(request) -> AnswerFailed:
    return AnswerFailed(
        question_id=request.question_id,
        reason="llm_error",
        detail="the language model failed",
        partial_answer="",
        model="openai/fake-chat",
        prompt_sha256=None,
        timings_ms={},
    )


async def _set_insert(db, allowed: bool) -> None:
    verb = (
        "GRANT INSERT ON events TO ragledger_app"
        if allowed
        else ("REVOKE INSERT ON events FROM ragledger_app")
    )
    async with db.owner_engine.begin() as conn:
        await conn.execute(text(verb))


async def test_the_terminal_append_is_retried_until_the_database_takes_it(db) -> None:
    request = _request()
    record = answering.QuestionRecord(db.sessionmaker, request)
    await _ask(record)
    await _set_insert(db, allowed=False)

    async def restore_soon() -> None:
        await asyncio.sleep(0.6)
        await _set_insert(db, allowed=True)

    restoring = asyncio.create_task(restore_soon())
    await record.append(_failed(request), terminal=True)
    await restoring
    async with db.sessionmaker() as session:
        events = await store.read_stream(session, f"question-{request.question_id}")
    assert [e.event_type for e in events] == ["QuestionAsked", "AnswerFailed"]
    assert record.version == 2


async def test_other_appends_fail_at_once_and_store_nothing(db) -> None:
    request = _request()
    record = answering.QuestionRecord(db.sessionmaker, request)
    await _ask(record)
    await _set_insert(db, allowed=False)
    try:
        with pytest.raises(SQLAlchemyError, match="permission denied"):
            await record.append(_failed(request))
    finally:
        await _set_insert(db, allowed=True)
    async with db.sessionmaker() as session:
        events = await store.read_stream(session, f"question-{request.question_id}")
    assert [e.event_type for e in events] == ["QuestionAsked"]


def _context(request) -> ContextRetrieved:
    return ContextRetrieved(
        question_id=request.question_id,
        chunks=(),
        embedding_model="test",
        settings={},
        candidates_considered=0,
        removed_by_access_filter=0,
        timings_ms={},
    )


async def _types(db, request) -> list[str]:
    async with db.sessionmaker() as session:
        events = await store.read_stream(session, f"question-{request.question_id}")
    return [e.event_type for e in events]


async def test_a_failure_after_an_append_that_landed_unheard_still_records_the_outcome(
    db,
) -> None:
    # ContextRetrieved committed, but the flow was cancelled before it heard so: its
    # idea of the stream's version is one behind. The outcome must still be recorded.
    request = _request()
    record = answering.QuestionRecord(db.sessionmaker, request)
    await _ask(record)
    await store.append_autocommitted(
        db.sessionmaker, f"question-{request.question_id}", [_context(request)]
    )
    await record.record_failure(model="m", reason="client_disconnected", detail="gone")
    assert await _types(db, request) == ["QuestionAsked", "ContextRetrieved", "AnswerFailed"]
    assert record.finished


async def test_a_failure_after_the_answer_was_recorded_leaves_the_answer_standing(db) -> None:
    request = _request()
    record = answering.QuestionRecord(db.sessionmaker, request)
    await _ask(record)
    await store.append_autocommitted(
        db.sessionmaker, f"question-{request.question_id}", [_failed(request)]
    )
    await record.record_failure(model="m", reason="client_disconnected", detail="gone")
    assert await _types(db, request) == ["QuestionAsked", "AnswerFailed"]
