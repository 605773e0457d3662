"""Stream the answer to the asker (quoted, generated, or none) and record how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ragledger.core.settings import Settings
from ragledger.events.questions import ContextChunk
from ragledger.services.answer_support import SupportReport
from ragledger.services.answering.context import RetrievedContext
from ragledger.services.answering.record import QuestionRecord
from ragledger.services.disclosure import visible_timings
from ragledger.services.embedding import Embedder
from ragledger.services.grounded_answers import (
    AnswerMode,
    checked_generation,
    extractive_answer,
    model_of,
)
from ragledger.services.llm import CompletionStats, LLMError, stream_completion
from ragledger.services.prompting import NO_CONTEXT_ANSWER, build_prompt


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event for the asker: `question`, `context`, `token`, `done` or `error`."""

    name: str
    data: dict[str, Any]


type Emit = Callable[[StreamEvent], Awaitable[None]]

# A token of an extractive answer: a word with the whitespace after it.
_WORDS = re.compile(r"\s*\S+\s*")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task unless it is done, and wait for it; its outcome is dropped."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def stream_answer(
    *,
    record: QuestionRecord,
    context: RetrievedContext,
    mode: AnswerMode,
    embedder: Embedder,
    settings: Settings,
    emit: Emit,
) -> None:
    """Stream the context's citations, then the answer; record AnswerGenerated; `done`."""
    if not context.chunks:
        # Nothing relevant and readable: say so plainly, without calling the model.
        await context.recording
        await _emit_context(emit, context.chunks)
        record.sent.append(NO_CONTEXT_ANSWER)
        await emit(StreamEvent("token", {"text": NO_CONTEXT_ANSWER}))
        await _finish(
            record,
            emit,
            answer=NO_CONTEXT_ANSWER,
            model="none",
            citations=(),
            stats=None,
            mode=mode,
            declined="no_context: no readable chunk matched the question",
        )
        return
    if mode == "extractive":
        await _stream_quote(
            record=record, context=context, embedder=embedder, settings=settings, emit=emit
        )
        return
    await _stream_generation(
        record=record,
        context=context,
        mode=mode,
        embedder=embedder,
        settings=settings,
        emit=emit,
    )


async def _stream_generation(
    *,
    record: QuestionRecord,
    context: RetrievedContext,
    mode: AnswerMode,
    embedder: Embedder,
    settings: Settings,
    emit: Emit,
) -> None:
    """Stream the language model's answer, then check it against the context."""
    request = record.request
    prompt = build_prompt(request.question, context.blocks, question_id=request.question_id)
    record.prompt_sha256 = prompt.sha256
    stats = CompletionStats(model=model_of(mode, settings))
    tokens = stream_completion(prompt.messages, settings, stats)
    # The model's request goes out while the context is being recorded; nothing of the
    # answer reaches the asker before the context is in the ledger.
    first = asyncio.create_task(anext(tokens, None), name=f"llm-{request.question_id}")
    try:
        await context.recording
    except BaseException:
        await cancel_and_wait(first)
        await tokens.aclose()
        raise
    await _emit_context(emit, context.chunks)
    try:
        delta = await first
        while delta is not None:
            record.sent.append(delta)
            await emit(StreamEvent("token", {"text": delta}))
            delta = await anext(tokens, None)
    finally:
        await cancel_and_wait(first)
        await tokens.aclose()
    answer = "".join(record.sent)
    if not answer.strip():
        raise LLMError("empty_answer", "the language model returned an empty answer")
    record.timings["ttft_ms"] = round(stats.ttft_ms or 0)
    record.timings["llm_ms"] = round(stats.total_ms)
    checking = time.perf_counter()
    recorded, citations, report, declined = await checked_generation(
        answer, context.blocks, embedder=embedder, settings=settings
    )
    record.timings["check_ms"] = round((time.perf_counter() - checking) * 1000)
    await _finish(
        record,
        emit,
        answer=recorded,
        model=stats.model,
        citations=citations,
        stats=stats,
        mode=mode,
        support=report,
        declined=declined,
        generated_answer=answer if declined else None,
    )


async def _stream_quote(
    *,
    record: QuestionRecord,
    context: RetrievedContext,
    embedder: Embedder,
    settings: Settings,
    emit: Emit,
) -> None:
    """Quote the context (services/extractive.py) and stream the quote word by word."""
    request = record.request
    extracting_since = time.perf_counter()
    # The sentences are embedded while the context is being recorded.
    extracting = asyncio.create_task(
        extractive_answer(
            request.question,
            context.question_vector,
            context.blocks,
            embedder=embedder,
            settings=settings,
        ),
        name=f"extract-{request.question_id}",
    )
    try:
        await context.recording
    except BaseException:
        await cancel_and_wait(extracting)
        raise
    await _emit_context(emit, context.chunks)
    answer = await extracting
    record.timings["ttft_ms"] = round((time.perf_counter() - extracting_since) * 1000)
    for word in _WORDS.findall(answer.text):
        record.sent.append(word)
        await emit(StreamEvent("token", {"text": word}))
    await _finish(
        record,
        emit,
        answer=answer.text,
        model=answer.model,
        citations=answer.citations,
        stats=None,
        mode="extractive",
        support=answer.support,
        declined=answer.declined,
    )


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
    record: QuestionRecord,
    emit: Emit,
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
    """Record AnswerGenerated, then tell the asker `done` with what they may see."""
    usage = {
        "prompt_tokens": stats.prompt_tokens if stats else 0,
        "completion_tokens": stats.completion_tokens if stats else 0,
    }
    await record.record_answer(
        answer=answer,
        model=model,
        citations=citations,
        usage=usage,
        mode=mode,
        support=support,
        declined=declined,
        generated_answer=generated_answer,
    )
    question_id = record.request.question_id
    await emit(
        StreamEvent(
            "done",
            {
                "answer_id": str(question_id),
                "receipt_url": f"/api/v1/answers/{question_id}/receipt",
                "usage": usage,
                # Embedding and search times would tell an employee about other users'
                # questions (the cache) and about documents they cannot read.
                "timings_ms": visible_timings(
                    record.timings, sees_everything=record.request.reader.sees_everything
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
