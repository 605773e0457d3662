"""Asking (streamed over Server-Sent Events), searching, and reading answers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse

from ragledger.api.app_services import AppServices, app_services
from ragledger.api.deps import EmployeeUser, ServicesDep, SessionDep, SettingsDep
from ragledger.api.errors import BODY_ERRORS, error_responses
from ragledger.api.provenance import ledger_ref, provenance_fields
from ragledger.api.rate_limits import RateScope
from ragledger.api.request_context import event_metadata
from ragledger.api.shutdown import DRAIN
from ragledger.api.sse import KEEP_ALIVE, format_sse
from ragledger.core.ids import uuid7
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.questions import (
    AnswerFeedbackGiven,
    SearchPerformed,
    question_stream,
)
from ragledger.schemas.questions import (
    AnswerPublic,
    FeedbackCreate,
    QuestionCreate,
    SearchCreate,
    SearchHit,
    SearchPublic,
)
from ragledger.schemas.tree_heads import ReceiptPublic
from ragledger.services.answering import (
    SERVER_SHUTDOWN,
    QuestionRequest,
    StreamEvent,
    answer_question,
    question_request,
    retrieval_params,
    validate_question,
)
from ragledger.services.audit.recorded_views import record_answer_view
from ragledger.services.documents import reader_of
from ragledger.services.embedding import get_embedder
from ragledger.services.errors import ConflictError, PermissionDeniedError
from ragledger.services.provenance import load_provenance
from ragledger.services.query_embedding import embed_query
from ragledger.services.receipts import build_receipt
from ragledger.services.retrieval import rank_shortlist, shortlist

log = structlog.get_logger(__name__)
router = APIRouter(tags=["questions"])


async def sse_stream(
    request: QuestionRequest, *, services: AppServices, settings: Settings
) -> AsyncIterator[bytes]:
    """Run the answer flow as a task and relay its events, with keep-alive comments.

    When the client goes away, this generator is closed or cancelled; the flow is then
    cancelled too, and records AnswerFailed `client_disconnected` itself. When the
    process starts shutting down, the flow gets SHUTDOWN_STREAM_GRACE_S to finish; then
    it is cancelled as `server_shutdown` and the stream ends with an `error` event.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    shutdown = services.shutdown
    keepalive_s = settings.sse_keepalive_s
    loop = asyncio.get_running_loop()
    flow = asyncio.create_task(
        answer_question(
            request,
            sessionmaker=services.database.sessionmaker,
            embedder=get_embedder(settings),
            settings=settings,
            emit=queue.put,
        ),
        name=f"answer-{request.question_id}",
    )
    flow.add_done_callback(lambda _task: queue.put_nowait(None))
    shutdown.streams.add(queue)
    grace_deadline: float | None = None
    if shutdown.draining.is_set():
        grace_deadline = loop.time() + settings.shutdown_stream_grace_s
    cut_short = False
    try:
        while True:
            timeout = keepalive_s
            if grace_deadline is not None:
                timeout = max(min(timeout, grace_deadline - loop.time()), 0.0)
            try:
                event = await asyncio.wait_for(queue.get(), timeout=timeout)
            except TimeoutError:
                if grace_deadline is not None and loop.time() >= grace_deadline:
                    grace_deadline = None
                    if not flow.done():
                        cut_short = True
                        log.info("answer_cut_short", question_id=str(request.question_id))
                        flow.cancel(SERVER_SHUTDOWN)
                    continue
                yield KEEP_ALIVE
                continue
            if event is DRAIN:
                if grace_deadline is None and not cut_short:
                    grace_deadline = loop.time() + settings.shutdown_stream_grace_s
                continue
            if event is None:
                break
            yield format_sse(event)
        if cut_short or flow.cancelled():
            yield format_sse(
                StreamEvent(
                    "error",
                    {
                        "reason": SERVER_SHUTDOWN,
                        "detail": "the server is restarting; the answer was not finished, "
                        "please ask again",
                    },
                )
            )
        elif flow.exception() is not None:
            log.error("answer_flow_crashed", error=repr(flow.exception()))
            yield format_sse(
                StreamEvent("error", {"reason": "internal_error", "detail": "the answer failed"})
            )
    finally:
        shutdown.streams.discard(queue)
        if not flow.done():
            flow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flow


@router.post(
    "/questions",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events: question, context, token*, then done or error.",
        },
        **error_responses(
            *BODY_ERRORS,
            401,
            described={
                403: "A document in document_ids is not readable",
                422: "Empty or too long question, top_k out of range, generative mode "
                "with no LLM_MODEL configured",
                429: "Question rate limit",
            },
        ),
    },
)
async def ask(
    request: Request,
    body: QuestionCreate,
    session: SessionDep,
    settings: SettingsDep,
    services: ServicesDep,
    user: EmployeeUser,
) -> StreamingResponse:
    """Ask a question; the answer streams with numbered citations (employee and up)."""
    await services.rate_limits.enforce(request, RateScope.QUESTIONS, str(user.id))
    asked = await question_request(
        session,
        question=body.question,
        top_k=body.top_k,
        document_ids=body.document_ids,
        mode=body.mode,
        reader=reader_of(user),
        asker_id=user.id,
        metadata=event_metadata(request, user),
        settings=settings,
    )
    return StreamingResponse(
        sse_stream(asked, services=services, settings=settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/search",
    response_model=SearchPublic,
    responses=error_responses(*BODY_ERRORS, 401, described={429: "Search rate limit"}),
)
async def search(
    request: Request,
    body: SearchCreate,
    session: SessionDep,
    settings: SettingsDep,
    user: EmployeeUser,
) -> SearchPublic:
    """Search the documents you may read, without asking the model (employee and up)."""
    # Each search embeds the query and appends an event: limited like questions.
    await app_services(request.app).rate_limits.enforce(request, RateScope.SEARCH, str(user.id))
    reader = reader_of(user)
    query, top_k, _ids = await validate_question(
        session,
        question=body.query,
        top_k=body.top_k,
        document_ids=None,
        reader=reader,
        settings=settings,
    )
    # No pooled connection is held while the model runs: the reads so far end here, and
    # the candidates' rows are read in a transaction of their own before their sentence
    # windows are embedded (seconds for a cold query; see retrieve_context).
    await session.commit()
    embedder = get_embedder(settings)
    vector, _cached = await embed_query(embedder, query, ttl_s=settings.query_embedding_cache_ttl_s)
    found = await shortlist(
        session,
        query=query,
        query_vector=vector,
        reader=reader,
        params=retrieval_params(settings, top_k),
        rerank=True,
    )
    await session.commit()
    result = await rank_shortlist(found, embedder=embedder)
    search_id = uuid7()
    await store.commit_then_append(
        session,
        f"search-{search_id}",
        [
            SearchPerformed(
                search_id=search_id,
                query=query,
                top_k=top_k,
                chunk_ids=tuple(c.chunk_id for c in result.chunks),
                searched_by=user.id,
                removed_by_access_filter=result.removed_by_access_filter,
            )
        ],
        expected_version=store.NO_STREAM,
        metadata=event_metadata(request, user),
    )
    return SearchPublic(
        search_id=search_id,
        results=[
            SearchHit(
                chunk_id=c.chunk_id,
                document_id=c.document_id,
                title=c.title,
                version=c.version,
                heading_path=list(c.heading_path),
                text=c.text,
                score=c.fused_score,
                similarity=c.similarity,
                vector_rank=c.vector_rank,
                text_rank=c.text_rank,
            )
            for c in result.chunks
        ],
    )


@router.get(
    "/answers/{answer_id}",
    response_model=AnswerPublic,
    responses=error_responses(401, 403, 404, 422),
)
async def get_answer(
    request: Request, answer_id: uuid.UUID, session: SessionDep, user: EmployeeUser
) -> AnswerPublic:
    """An answer with its exact context and ledger positions (asker, auditors, admins)."""
    p = await load_provenance(session, answer_id, reader_of(user))
    response = AnswerPublic(
        **provenance_fields(p),
        answer_id=p.question_id,
        answer_withheld=p.answer_withheld,
        events=[ledger_ref(e) for e in p.events],
    )
    # An auditor or admin reading someone else's answer is recorded as the audit route's.
    await record_answer_view(
        session,
        reader_id=user.id,
        answer_id=answer_id,
        asked_by=p.asked_by,
        metadata=event_metadata(request, user),
    )
    return response


@router.get(
    "/answers/{answer_id}/receipt",
    response_model=ReceiptPublic,
    responses=error_responses(
        401,
        403,
        404,
        422,
        described={409: "The answer is not finished, or the tree has not reached it yet"},
    ),
)
async def get_receipt(
    request: Request, answer_id: uuid.UUID, session: SessionDep, user: EmployeeUser
) -> ReceiptPublic:
    """The answer's events with Merkle proofs in a signed tree head (asker, auditors, admins)."""
    receipt = await build_receipt(
        session,
        app_services(request.app).signer,
        answer_id=answer_id,
        reader=reader_of(user),
        metadata=event_metadata(request, user),
    )
    return ReceiptPublic(**receipt)


@router.post(
    "/answers/{answer_id}/feedback",
    status_code=status.HTTP_201_CREATED,
    response_model=dict,
    responses=error_responses(*BODY_ERRORS, 401, 403, 404, 409),
)
async def give_feedback(
    request: Request,
    answer_id: uuid.UUID,
    body: FeedbackCreate,
    session: SessionDep,
    user: EmployeeUser,
) -> dict[str, str]:
    """Say whether an answer helped (the asker only)."""
    p = await load_provenance(session, answer_id, reader_of(user))
    if p.asked_by != user.id:
        raise PermissionDeniedError(
            "only the asker can give feedback", reason="not_the_asker", user_id=user.id
        )
    if p.status == "pending":
        raise ConflictError("the answer is not finished yet")
    comment = " ".join(body.comment.replace("\x00", " ").split()) if body.comment else None
    await store.commit_then_append(
        session,
        question_stream(answer_id),
        [AnswerFeedbackGiven(answer_id, body.helpful, comment or None, user.id)],
        metadata=event_metadata(request, user),
    )
    return {"status": "recorded"}
