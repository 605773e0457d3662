"""The answer flow from end to end: it always ends the question in the ledger."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core.settings import Settings
from ragledger.events.questions import QuestionAsked
from ragledger.services.answering.context import embed_question, retrieve_context
from ragledger.services.answering.intake import QuestionRequest
from ragledger.services.answering.record import QuestionRecord
from ragledger.services.answering.streaming import (
    Emit,
    StreamEvent,
    cancel_and_wait,
    stream_answer,
)
from ragledger.services.embedding import Embedder
from ragledger.services.grounded_answers import model_of, resolve_mode
from ragledger.services.llm import LLMError

log = structlog.get_logger(__name__)

# The cancellation message (and AnswerFailed reason) of an answer cut short by shutdown.
SERVER_SHUTDOWN = "server_shutdown"


async def answer_question(
    request: QuestionRequest,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    settings: Settings,
    emit: Emit,
) -> None:
    """Run the whole flow, emitting events; always ends the question in the ledger.

    Cancellation (the asker went away) records AnswerFailed `client_disconnected` with
    the text sent so far, then re-raises; cancelled with the message SERVER_SHUTDOWN
    (the process is stopping), it records `server_shutdown` instead.
    """
    record = QuestionRecord(sessionmaker, request)
    mode = request.mode or resolve_mode(None, settings)
    model = model_of(mode, settings)
    # The question's embedding does not depend on its record: both go at once.
    embedding = asyncio.create_task(
        embed_question(embedder, request.question, settings),
        name=f"embed-{request.question_id}",
    )
    try:
        await record.append(
            QuestionAsked(
                question_id=request.question_id,
                question=request.question,
                top_k=request.top_k,
                document_ids=request.document_ids,
                asked_by=request.asker_id,
                role=request.reader.role,
                groups=request.reader.groups,
            ),
        )
    except BaseException:
        await cancel_and_wait(embedding)
        raise
    try:
        await emit(StreamEvent("question", {"question_id": str(request.question_id)}))
        context = await retrieve_context(
            record=record, embedding=embedding, embedder=embedder, settings=settings
        )
        await stream_answer(
            record=record,
            context=context,
            mode=mode,
            embedder=embedder,
            settings=settings,
            emit=emit,
        )
    except asyncio.CancelledError as exc:
        if not record.finished:
            shutdown = SERVER_SHUTDOWN in exc.args
            await asyncio.shield(
                record.record_failure(
                    model=model,
                    reason=SERVER_SHUTDOWN if shutdown else "client_disconnected",
                    detail="the server shut down before the answer was complete"
                    if shutdown
                    else "the client disconnected before the answer was complete",
                )
            )
        raise
    except LLMError as exc:
        await record.record_failure(model=model, reason=exc.reason, detail=exc.detail)
        await emit(StreamEvent("error", {"reason": exc.reason, "detail": exc.detail}))
    except Exception as exc:
        log.exception("answer_failed_unexpectedly", question_id=str(request.question_id))
        await record.record_failure(model=model, reason="internal_error", detail=type(exc).__name__)
        await emit(
            StreamEvent("error", {"reason": "internal_error", "detail": "the answer failed"})
        )
    finally:
        await cancel_and_wait(embedding)
