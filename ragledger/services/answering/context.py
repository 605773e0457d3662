"""The answer's context: embed the question, retrieve what the asker may read, record it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragledger.core.settings import Settings
from ragledger.events.questions import ContextChunk, ContextRetrieved
from ragledger.services.answering.record import QuestionRecord
from ragledger.services.embedding import Embedder
from ragledger.services.prompting import ContextBlock
from ragledger.services.query_embedding import embed_query
from ragledger.services.retrieval import (
    RetrievalParams,
    RetrievedChunk,
    rank_shortlist,
    shortlist,
)


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
        rerank_depth=settings.rerank_depth,
        window_weight=settings.rerank_window_weight,
        overlap_weight=settings.rerank_overlap_weight,
    )


@dataclass(frozen=True, slots=True)
class QuestionEmbedding:
    """The question's vector, whether it came from the cache, and when embedding began."""

    vector: Any
    cached: bool
    started: float
    ms: int


async def embed_question(
    embedder: Embedder, question: str, settings: Settings
) -> QuestionEmbedding:
    """Embed the question through the query-embedding cache, timed."""
    started = time.perf_counter()
    vector, cached = await embed_query(
        embedder, question, ttl_s=settings.query_embedding_cache_ttl_s
    )
    return QuestionEmbedding(vector, cached, started, round((time.perf_counter() - started) * 1000))


@dataclass(frozen=True, slots=True)
class RetrievedContext:
    """The chunks retrieved for a question, and the task recording them as ContextRetrieved.

    Nothing of the answer may reach the asker before `recording` is done: the context
    is in the ledger first.
    """

    chunks: tuple[ContextChunk, ...]
    blocks: tuple[ContextBlock, ...]
    question_vector: Any
    recording: asyncio.Task[None]


async def retrieve_context(
    *,
    record: QuestionRecord,
    embedding: asyncio.Task[QuestionEmbedding],
    embedder: Embedder,
    settings: Settings,
) -> RetrievedContext:
    """Retrieve the question's context and start recording it (ContextRetrieved)."""
    request = record.request
    params = retrieval_params(settings, request.top_k)
    embedded = await embedding
    record.timings["embed_ms"] = embedded.ms
    async with record.sessionmaker() as session, session.begin():
        found = await shortlist(
            session,
            query=request.question,
            query_vector=embedded.vector,
            reader=request.reader,
            params=params,
            document_ids=request.document_ids or None,
            rerank=True,
        )
    # The connection is back in the pool before the candidates' windows are embedded
    # (1.6-4 s for a cold question on a loaded machine: docs/answers.md#retrieval).
    result = await rank_shortlist(found, embedder=embedder)
    record.timings.update(
        search_ms=round(result.search_ms),
        fusion_ms=round(result.fusion_ms),
        retrieval_ms=round((time.perf_counter() - embedded.started) * 1000),
    )
    chunks = _context_chunks(result.chunks)
    recording = asyncio.create_task(
        record.append(
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
                    "rerank_depth": str(params.rerank_depth),
                    "rerank_window_weight": str(params.window_weight),
                    "rerank_overlap_weight": str(params.overlap_weight),
                    "query_embedding_cached": str(embedded.cached).lower(),
                },
                candidates_considered=result.candidates_considered,
                removed_by_access_filter=result.removed_by_access_filter,
                timings_ms=dict(record.timings),
            ),
        ),
        name=f"context-{request.question_id}",
    )
    blocks = tuple(
        ContextBlock(n, c.title, c.version, c.heading_path, c.text)
        for n, c in enumerate(result.chunks, start=1)
    )
    return RetrievedContext(chunks, blocks, embedded.vector, recording)


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
