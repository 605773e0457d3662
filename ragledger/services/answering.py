"""Answer a question: record it, retrieve, stream the LLM's answer, record the outcome.

The flow is several short transactions, never one held across slow work:
QuestionAsked, then (after embedding and retrieval) ContextRetrieved, then (after the
stream) AnswerGenerated or AnswerFailed. It emits `StreamEvent`s for the transport
(SSE in the API, the terminal in the CLI) through a callback, so that a transport that
goes away (a client disconnecting) cancels the flow, which then records what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core import metrics
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.questions import (
    AnswerFailed,
    AnswerGenerated,
    ContextChunk,
    ContextRetrieved,
    QuestionAsked,
    question_stream,
)
from ragledger.models.documents import DocumentRow
from ragledger.services.answer_support import SupportReport
from ragledger.services.disclosure import visible_timings
from ragledger.services.documents import Reader, readable_documents
from ragledger.services.embedding import Embedder
from ragledger.services.errors import InvalidInputError, PermissionDeniedError
from ragledger.services.grounded_answers import (
    AnswerMode,
    checked_generation,
    extractive_answer,
    model_of,
    resolve_mode,
)
from ragledger.services.llm import CompletionStats, LLMError, stream_completion
from ragledger.services.prompting import (
    NO_CONTEXT_ANSWER,
    ContextBlock,
    build_prompt,
)
from ragledger.services.query_embedding import embed_query
from ragledger.services.retrieval import RetrievalParams, RetrievedChunk, retrieve

log = structlog.get_logger(__name__)

# The cancellation message (and AnswerFailed reason) of an answer cut short by shutdown.
SERVER_SHUTDOWN = "server_shutdown"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event for the asker: `question`, `context`, `token`, `done` or `error`."""

    name: str
    data: dict[str, Any]


type Emit = Callable[[StreamEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class QuestionRequest:
    """A validated question and who asks it."""

    question_id: uuid.UUID
    question: str
    top_k: int
    document_ids: tuple[uuid.UUID, ...]
    reader: Reader
    asker_id: uuid.UUID
    metadata: EventMetadata
    # extractive or generative; None: the configured default (see resolve_mode).
    mode: AnswerMode | None = None


@dataclass(slots=True)
class _Progress:
    sent: list[str] = field(default_factory=list)
    prompt_sha256: str | None = None
    timings: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    # The question stream's version after our last append: the terminal event is
    # appended with it as expected_version, so a question gets exactly one outcome
    # even when a disconnect races the final append.
    version: int = 0


def retrieval_params(settings: Settings, top_k: int) -> RetrievalParams:
    """The retrieval knobs for one question.

    The candidate depth never depends on the question's `top_k`, so the chunks for a
    smaller `top_k` are the first ones of a larger `top_k`'s, in the same order.
    """
    return RetrievalParams(
        top_k=top_k,
        candidates=max(settings.retrieval_candidates, settings.top_k_max, top_k),
        rrf_k=settings.rrf_k,
        min_similarity=settings.min_similarity,
        ef_search=settings.hnsw_ef_search,
        max_scan_tuples=settings.hnsw_max_scan_tuples,
        fusion=settings.fusion,
        text_weight=settings.fusion_text_weight,
    )


async def validate_question(
    session: AsyncSession,
    *,
    question: str,
    top_k: int | None,
    document_ids: Sequence[uuid.UUID] | None,
    reader: Reader,
    settings: Settings,
) -> tuple[str, int, tuple[uuid.UUID, ...]]:
    """Clean and check a question before anything is recorded (422, 403)."""
    cleaned = " ".join(question.replace("\x00", " ").split())
    if not cleaned:
        raise InvalidInputError("the question is empty")
    if len(cleaned) > settings.question_max_chars:
        raise InvalidInputError(
            f"the question is longer than {settings.question_max_chars} characters"
        )
    k = settings.top_k_default if top_k is None else top_k
    if not 1 <= k <= settings.top_k_max:
        raise InvalidInputError(f"top_k must be between 1 and {settings.top_k_max}")
    ids = tuple(dict.fromkeys(document_ids or ()))
    if ids:
        readable = set(
            (
                await session.scalars(
                    readable_documents(reader)
                    .where(DocumentRow.document_id.in_(ids))
                    .with_only_columns(DocumentRow.document_id)
                )
            ).all()
        )
        if set(ids) - readable:
            raise PermissionDeniedError(
                "you may not read some of the documents named in document_ids",
                reason="document_not_readable",
                user_id=reader.user_id,
            )
    return cleaned, k, ids


# A terminal event (AnswerGenerated, AnswerFailed) must land even when the database is
# briefly unreachable or its pool exhausted: a question without one stays "pending" in
# every audit view. Retries are safe: expected_version turns a retry of an append that
# did commit into WrongExpectedVersionError, which the callers read as "recorded".
TERMINAL_APPEND_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
TERMINAL_EVENT_TYPES = frozenset({"AnswerGenerated", "AnswerFailed"})


async def _append(
    sessionmaker: async_sessionmaker[AsyncSession],
    request: QuestionRequest,
    progress: _Progress,
    event: object,
    *,
    terminal: bool = False,
) -> None:
    delays = iter(TERMINAL_APPEND_DELAYS_S if terminal else ())
    retrying = False
    while True:
        try:
            recorded = await store.append_autocommitted(
                sessionmaker,
                question_stream(request.question_id),
                [event],
                expected_version=progress.version,
                metadata=request.metadata,
            )
        except WrongExpectedVersionError:
            if not retrying:
                raise
            # Only this flow writes the question's stream: the attempt whose commit
            # we did not hear back from did land.
            progress.version = (progress.version or 0) + 1
            return
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            retrying = True
            delay = next(delays, None)
            if delay is None:
                raise
            log.warning(
                "answer_append_retry",
                question_id=str(request.question_id),
                event_type=type(event).__name__,
                error=repr(exc),
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)
            continue
        progress.version = recorded[0].stream_version
        return


def _context_chunks(chunks: Sequence[RetrievedChunk]) -> tuple[ContextChunk, ...]:
    return tuple(
        ContextChunk(
            n=n,
            chunk_id=c.chunk_id,
            document_id=c.document_id,
            version=c.version,
            chunk_index=c.chunk_index,
            title=c.title,
            heading_path=c.heading_path,
            text_sha256=c.text_sha256,
            vector_rank=c.vector_rank,
            text_rank=c.text_rank,
            similarity=None if c.similarity is None else f"{c.similarity:.6f}",
            fused_score=f"{c.fused_score:.9f}",
        )
        for n, c in enumerate(chunks, start=1)
    )


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
    progress = _Progress()
    started = time.perf_counter()
    mode = request.mode or resolve_mode(None, settings)
    model = model_of(mode, settings)
    # The question's embedding does not depend on its record: both go at once.
    embedding = asyncio.create_task(
        _embed(embedder, request.question, settings), name=f"embed-{request.question_id}"
    )
    try:
        await _append(
            sessionmaker,
            request,
            progress,
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
        await _cancel(embedding)
        raise
    try:
        await emit(StreamEvent("question", {"question_id": str(request.question_id)}))
        await _run(
            request, progress, sessionmaker, embedding, embedder, settings, emit, started, mode
        )
    except asyncio.CancelledError as exc:
        if not progress.finished:
            shutdown = SERVER_SHUTDOWN in exc.args
            await asyncio.shield(
                _record_failure(
                    sessionmaker,
                    request,
                    progress,
                    model,
                    SERVER_SHUTDOWN if shutdown else "client_disconnected",
                    "the server shut down before the answer was complete"
                    if shutdown
                    else "the client disconnected before the answer was complete",
                    started,
                )
            )
        raise
    except LLMError as exc:
        await _record_failure(
            sessionmaker, request, progress, model, exc.reason, exc.detail, started
        )
        await emit(StreamEvent("error", {"reason": exc.reason, "detail": exc.detail}))
    except Exception as exc:
        log.exception("answer_failed_unexpectedly", question_id=str(request.question_id))
        await _record_failure(
            sessionmaker, request, progress, model, "internal_error", type(exc).__name__, started
        )
        await emit(
            StreamEvent("error", {"reason": "internal_error", "detail": "the answer failed"})
        )
    finally:
        await _cancel(embedding)


async def _has_outcome(
    sessionmaker: async_sessionmaker[AsyncSession], question_id: uuid.UUID
) -> bool:
    async with sessionmaker() as session:
        events = await store.read_stream(session, question_stream(question_id))
    return any(e.event_type in TERMINAL_EVENT_TYPES for e in events)


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task unless it is done, and wait for it; its outcome is dropped."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


@dataclass(frozen=True, slots=True)
class _Embedding:
    vector: Any
    cached: bool
    started: float
    ms: int


async def _embed(embedder: Embedder, question: str, settings: Settings) -> _Embedding:
    started = time.perf_counter()
    vector, cached = await embed_query(
        embedder, question, ttl_s=settings.query_embedding_cache_ttl_s
    )
    return _Embedding(vector, cached, started, round((time.perf_counter() - started) * 1000))


async def _record_failure(
    sessionmaker: async_sessionmaker[AsyncSession],
    request: QuestionRequest,
    progress: _Progress,
    model: str,
    reason: str,
    detail: str,
    started: float,
) -> None:
    if progress.finished:
        return
    progress.timings["total_ms"] = round((time.perf_counter() - started) * 1000)
    failed = AnswerFailed(
        question_id=request.question_id,
        reason=reason,
        detail=detail,
        partial_answer="".join(progress.sent),
        model=model,
        prompt_sha256=progress.prompt_sha256,
        timings_ms=dict(progress.timings),
    )
    try:
        await _append(sessionmaker, request, progress, failed, terminal=True)
    except WrongExpectedVersionError as exc:
        if await _has_outcome(sessionmaker, request.question_id):
            # The answer was recorded complete just before the failure: it stands.
            return
        # An earlier append landed although we never heard back (cancelled while its
        # commit was on the way): the question still needs its outcome.
        progress.version = exc.actual
        await _append(sessionmaker, request, progress, failed, terminal=True)
    progress.finished = True
    metrics.questions.labels(f"failed_{reason}").inc()
    log.info("answer_failed", question_id=str(request.question_id), reason=reason)


async def _run(
    request: QuestionRequest,
    progress: _Progress,
    sessionmaker: async_sessionmaker[AsyncSession],
    embedding: asyncio.Task[_Embedding],
    embedder: Embedder,
    settings: Settings,
    emit: Emit,
    started: float,
    mode: AnswerMode,
) -> None:
    params = retrieval_params(settings, request.top_k)
    embedded = await embedding
    t0 = embedded.started
    cached = embedded.cached
    progress.timings["embed_ms"] = embedded.ms
    async with sessionmaker() as session, session.begin():
        result = await retrieve(
            session,
            query=request.question,
            query_vector=embedded.vector,
            reader=request.reader,
            params=params,
            document_ids=request.document_ids or None,
            embedder=embedder,
        )
    progress.timings.update(
        search_ms=round(result.search_ms),
        fusion_ms=round(result.fusion_ms),
        retrieval_ms=round((time.perf_counter() - t0) * 1000),
    )
    chunks = _context_chunks(result.chunks)
    recording = asyncio.create_task(
        _append(
            sessionmaker,
            request,
            progress,
            ContextRetrieved(
                question_id=request.question_id,
                chunks=chunks,
                embedding_model=embedder.info.name,
                settings={
                    "top_k": str(params.top_k),
                    "candidates": str(params.candidates),
                    "rrf_k": str(params.rrf_k),
                    "fusion": params.fusion,
                    "fusion_text_weight": str(params.text_weight),
                    "min_similarity": str(params.min_similarity),
                    "hnsw_ef_search": str(params.ef_search),
                    "hnsw_max_scan_tuples": str(params.max_scan_tuples),
                    "query_embedding_cached": str(cached).lower(),
                },
                candidates_considered=result.candidates_considered,
                removed_by_access_filter=result.removed_by_access_filter,
                timings_ms=dict(progress.timings),
            ),
        ),
        name=f"context-{request.question_id}",
    )

    if not result.chunks:
        # Nothing relevant and readable: say so plainly, without calling the model.
        await recording
        await _emit_context(emit, chunks)
        progress.sent.append(NO_CONTEXT_ANSWER)
        await emit(StreamEvent("token", {"text": NO_CONTEXT_ANSWER}))
        await _finish(
            request,
            progress,
            sessionmaker,
            emit,
            started,
            answer=NO_CONTEXT_ANSWER,
            model="none",
            citations=(),
            stats=None,
            mode=mode,
            declined="no_context: no readable chunk matched the question",
        )
        return

    blocks = [
        ContextBlock(n, c.title, c.version, c.heading_path, c.text)
        for n, c in enumerate(result.chunks, start=1)
    ]
    if mode == "extractive":
        await _run_extractive(
            request, progress, sessionmaker, embedder, settings, emit, started, blocks,
            embedded.vector, recording, chunks,
        )  # fmt: skip
        return
    prompt = build_prompt(request.question, blocks, question_id=request.question_id)
    progress.prompt_sha256 = prompt.sha256
    stats = CompletionStats(model=model_of(mode, settings))
    tokens = stream_completion(prompt.messages, settings, stats)
    # The model's request goes out while the context is being recorded; nothing of the
    # answer reaches the asker before the context is in the ledger.
    first = asyncio.create_task(anext(tokens, None), name=f"llm-{request.question_id}")
    try:
        await recording
    except BaseException:
        await _cancel(first)
        await tokens.aclose()
        raise
    await _emit_context(emit, chunks)
    try:
        delta = await first
        while delta is not None:
            progress.sent.append(delta)
            await emit(StreamEvent("token", {"text": delta}))
            delta = await anext(tokens, None)
    finally:
        await _cancel(first)
        await tokens.aclose()
    answer = "".join(progress.sent)
    if not answer.strip():
        raise LLMError("empty_answer", "the language model returned an empty answer")
    progress.timings["ttft_ms"] = round(stats.ttft_ms or 0)
    progress.timings["llm_ms"] = round(stats.total_ms)
    checking = time.perf_counter()
    recorded, citations, report, declined = await checked_generation(
        answer, blocks, embedder=embedder, settings=settings
    )
    progress.timings["check_ms"] = round((time.perf_counter() - checking) * 1000)
    await _finish(
        request,
        progress,
        sessionmaker,
        emit,
        started,
        answer=recorded,
        model=stats.model,
        citations=citations,
        stats=stats,
        mode=mode,
        support=report,
        declined=declined,
        generated_answer=answer if declined else None,
    )


async def _run_extractive(
    request: QuestionRequest,
    progress: _Progress,
    sessionmaker: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    settings: Settings,
    emit: Emit,
    started: float,
    blocks: Sequence[ContextBlock],
    question_vector: Any,
    recording: asyncio.Task[None],
    chunks: Sequence[ContextChunk],
) -> None:
    """Quote the context (services/extractive.py) and stream the quote word by word."""
    extracting_since = time.perf_counter()
    # The sentences are embedded while the context is being recorded.
    extracting = asyncio.create_task(
        extractive_answer(
            request.question, question_vector, blocks, embedder=embedder, settings=settings
        ),
        name=f"extract-{request.question_id}",
    )
    try:
        await recording
    except BaseException:
        await _cancel(extracting)
        raise
    await _emit_context(emit, chunks)
    answer = await extracting
    progress.timings["ttft_ms"] = round((time.perf_counter() - extracting_since) * 1000)
    for word in _WORDS.findall(answer.text):
        progress.sent.append(word)
        await emit(StreamEvent("token", {"text": word}))
    await _finish(
        request,
        progress,
        sessionmaker,
        emit,
        started,
        answer=answer.text,
        model=answer.model,
        citations=answer.citations,
        stats=None,
        mode="extractive",
        support=answer.support,
        declined=answer.declined,
    )


# A token of an extractive answer: a word with the whitespace after it.
_WORDS = re.compile(r"\s*\S+\s*")


async def _emit_context(emit: Emit, chunks: Sequence[ContextChunk]) -> None:
    await emit(
        StreamEvent(
            "context",
            {
                "citations": [
                    {
                        "n": c.n,
                        "chunk_id": str(c.chunk_id),
                        "document_id": str(c.document_id),
                        "title": c.title,
                        "version": c.version,
                        "heading_path": list(c.heading_path),
                        "score": c.fused_score,
                    }
                    for c in chunks
                ]
            },
        )
    )


async def _finish(
    request: QuestionRequest,
    progress: _Progress,
    sessionmaker: async_sessionmaker[AsyncSession],
    emit: Emit,
    started: float,
    *,
    answer: str,
    model: str,
    citations: tuple[int, ...],
    stats: CompletionStats | None,
    mode: AnswerMode,
    support: SupportReport | None = None,
    declined: str | None = None,
    generated_answer: str | None = None,
) -> None:
    progress.timings["total_ms"] = round((time.perf_counter() - started) * 1000)
    usage = {
        "prompt_tokens": stats.prompt_tokens if stats else 0,
        "completion_tokens": stats.completion_tokens if stats else 0,
    }
    # Shielded: a disconnect arriving now must not leave the final append half done.
    await asyncio.shield(
        _append(
            sessionmaker,
            request,
            progress,
            AnswerGenerated(
                question_id=request.question_id,
                answer=answer,
                model=model,
                prompt_sha256=progress.prompt_sha256,
                citations=citations,
                usage=usage,
                timings_ms=dict(progress.timings),
                no_context=support is None,
                mode=mode,
                support=support.record() if support is not None else None,
                declined=declined,
                generated_answer=generated_answer,
            ),
            terminal=True,
        )
    )
    progress.finished = True
    outcome = "no_context" if support is None else "declined" if declined else "answered"
    metrics.questions.labels(outcome).inc()
    log.info(
        "answer_generated",
        question_id=str(request.question_id),
        model=model,
        mode=mode,
        citations=len(citations),
        groundedness=None if support is None else round(support.groundedness, 3),
        declined=declined,
        **progress.timings,
    )
    await emit(
        StreamEvent(
            "done",
            {
                "answer_id": str(request.question_id),
                "receipt_url": f"/api/v1/answers/{request.question_id}/receipt",
                "usage": usage,
                # Embedding and search times would tell an employee about other users'
                # questions (the cache) and about documents they cannot read.
                "timings_ms": visible_timings(
                    progress.timings, sees_everything=request.reader.sees_everything
                ),
                "citations": list(citations),
                "mode": mode,
                "declined": declined,
                # A declined generative answer was streamed before it was checked: the
                # asker's client shows this text in its place.
                "answer": answer if generated_answer is not None else None,
                "support": support.summary() if support is not None else None,
            },
        )
    )
