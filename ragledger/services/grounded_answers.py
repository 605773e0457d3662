"""Grounded answers from retrieved context: the answer path without the ledger or a stream.

`answer_from_context` is the whole of it for callers that have the context already (the
evaluation): extractive answers quote the context (services/extractive.py); generative
ones come from the LLM and are then checked sentence by sentence
(services/answer_support.py). Either declines, with the reason, when the context does
not support an answer. The streamed flow (services/answering/) uses the same pieces.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ragledger.core.ids import uuid7
from ragledger.core.settings import Settings
from ragledger.services.answer_support import SupportBlock, SupportReport, check_support
from ragledger.services.embedding import Embedder
from ragledger.services.errors import InvalidInputError
from ragledger.services.extractive import ExtractiveParams, extract_answer
from ragledger.services.llm import CompletionStats, stream_completion
from ragledger.services.prompting import ContextBlock, build_prompt, cited_numbers

AnswerMode = Literal["extractive", "generative"]
EXTRACTIVE_MODEL = "extractive"
DECLINE_ANSWER = "The documents do not cover this question."


@dataclass(frozen=True, slots=True)
class GroundedAnswer:
    """An answer with its support: what the asker gets and what the ledger records.

    `text` is the answer (DECLINE_ANSWER when `declined` gives a reason);
    `generated_text` a declined generative answer's own words.
    """

    mode: AnswerMode
    model: str
    text: str
    citations: tuple[int, ...]
    support: SupportReport
    declined: str | None
    generated_text: str | None = None
    prompt_sha256: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    timings_ms: dict[str, int] = field(default_factory=dict)


def resolve_mode(requested: str | None, settings: Settings) -> AnswerMode:
    """The mode of a question: as requested, else ANSWER_MODE, else by LLM_MODEL.

    Raises InvalidInputError (422) for generative answers with no LLM_MODEL configured.
    """
    mode = requested or settings.answer_mode
    if mode is None:
        mode = "generative" if settings.llm_model else "extractive"
    if mode not in ("extractive", "generative"):
        raise InvalidInputError("mode must be extractive or generative")
    if mode == "generative" and not settings.llm_model:
        raise InvalidInputError(
            "generative answers need a language model, and none is configured (LLM_MODEL); "
            "ask with mode extractive"
        )
    return mode  # type: ignore[return-value]


def model_of(mode: AnswerMode, settings: Settings) -> str:
    """The `model` recorded for an answer of this mode."""
    if mode == "generative" and settings.llm_model:
        return settings.llm_model
    return EXTRACTIVE_MODEL


def extractive_params(settings: Settings) -> ExtractiveParams:
    """The extractive knobs from settings."""
    return ExtractiveParams(
        min_relevance=settings.extractive_min_relevance,
        max_sentences=settings.extractive_max_sentences,
        margin=settings.extractive_relevance_margin,
    )


def support_blocks(blocks: Sequence[ContextBlock]) -> list[SupportBlock]:
    """The blocks as the checker and the extractor see them."""
    return [SupportBlock(b.n, b.text) for b in blocks]


async def extractive_answer(
    question: str,
    question_vector: np.ndarray,
    blocks: Sequence[ContextBlock],
    *,
    embedder: Embedder,
    settings: Settings,
) -> GroundedAnswer:
    """Quote the context (or decline); the question's vector is retrieval's own."""
    extract = await extract_answer(
        question,
        question_vector,
        support_blocks(blocks),
        embedder=embedder,
        params=extractive_params(settings),
    )
    return GroundedAnswer(
        mode="extractive",
        model=EXTRACTIVE_MODEL,
        text=DECLINE_ANSWER if extract.declined else extract.text,
        citations=extract.citations,
        support=extract.report,
        declined=extract.declined,
    )


async def checked_generation(
    generated: str,
    blocks: Sequence[ContextBlock],
    *,
    embedder: Embedder,
    settings: Settings,
) -> tuple[str, tuple[int, ...], SupportReport, str | None]:
    """Check a generated answer: (answer to record, citations, report, why declined)."""
    report = await check_support(
        generated, support_blocks(blocks), embedder=embedder, min_score=settings.support_min_score
    )
    if report.supported_count == 0:
        checked = sum(1 for s in report.sentences if s.checked)
        why = (
            f"no_supported_sentence: none of the {checked} checked sentence(s) reached "
            f"support {settings.support_min_score:g} against the context"
            if checked
            else "no_supported_sentence: the answer has no sentence to check"
        )
        return DECLINE_ANSWER, (), report, why
    return generated, cited_numbers(generated, len(blocks)), report, None


async def answer_from_context(
    question: str,
    blocks: Sequence[ContextBlock],
    *,
    mode: AnswerMode,
    embedder: Embedder,
    settings: Settings,
    question_vector: np.ndarray | None = None,
) -> GroundedAnswer:
    """Answer `question` from `blocks` (numbered from 1) in `mode`, checked, not streamed.

    With no blocks it declines. Raises LLMError when a generative call fails.
    """
    started = time.perf_counter()
    if not blocks:
        return GroundedAnswer(
            mode=mode,
            model=model_of(mode, settings),
            text=DECLINE_ANSWER,
            citations=(),
            support=SupportReport("none", (), 0.0, (), ()),
            declined="no_context: no readable chunk matched the question",
        )
    if mode == "extractive":
        if question_vector is None:
            question_vector = (await embedder.embed([question]))[0]
        answer = await extractive_answer(
            question, question_vector, blocks, embedder=embedder, settings=settings
        )
        return _with_timings(answer, started, {})
    # Not a recorded question: a fresh id still gives the context its unforgeable tag.
    prompt = build_prompt(question, blocks, question_id=uuid7())
    stats = CompletionStats(model=model_of(mode, settings))
    deltas = stream_completion(prompt.messages, settings, stats)
    generated = "".join([delta async for delta in deltas])
    text, citations, report, declined = await checked_generation(
        generated, blocks, embedder=embedder, settings=settings
    )
    return _with_timings(
        GroundedAnswer(
            mode="generative",
            model=stats.model,
            text=text,
            citations=citations,
            support=report,
            declined=declined,
            generated_text=generated if declined else None,
            prompt_sha256=prompt.sha256,
            usage={
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens,
            },
        ),
        started,
        {"ttft_ms": round(stats.ttft_ms or 0), "llm_ms": round(stats.total_ms)},
    )


def _with_timings(answer: GroundedAnswer, started: float, extra: dict[str, int]) -> GroundedAnswer:
    total = round((time.perf_counter() - started) * 1000)
    return dataclasses.replace(answer, timings_ms={**extra, "total_ms": total})
