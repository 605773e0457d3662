"""Hybrid retrieval under access control: candidates fused, re-ranked, cut to top_k.

`services/search_candidates.py` finds the candidates (pgvector HNSW and PostgreSQL full
text, the access filter inside the query) in the caller's transaction; `shortlist`
fuses them and applies the relevance cut there too, and `rank_shortlist` re-ranks the
shortlist small-to-big (services/window_rerank.py) with no connection held, since
embedding a cold question's windows takes most of a second. `retrieve` is both halves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core import metrics
from ragledger.services.documents import Reader
from ragledger.services.embedding import Embedder
from ragledger.services.rank_fusion import reciprocal_rank_fusion, score_fusion
from ragledger.services.search_candidates import (
    configure_hnsw,
    search_candidates,
)
from ragledger.services.sentences import content_words, overlap
from ragledger.services.window_rerank import best_window_similarities, rescore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetrievalParams:
    """How retrieval runs (recorded with every ContextRetrieved)."""

    top_k: int
    candidates: int
    rrf_k: int
    min_similarity: float
    ef_search: int
    max_scan_tuples: int
    fusion: str = "score"
    text_weight: float = 0.1
    # Small-to-big re-ranking (services/window_rerank.py) of the first `rerank_depth`
    # relevant candidates, whatever `top_k` is, so a smaller top_k's chunks stay the
    # first ones of a larger top_k's. Depth 15 and weight 0.5 were best on the
    # evaluation set (bench/quality.py): recall@5 0.86 vs 0.77 without.
    rerank_depth: int = 15
    window_weight: float = 0.5
    # In the re-ranking, the word bonus is this times the share of the question's
    # content words the chunk holds (services/sentences.py), not the full-text rank:
    # MRR@5 0.677 vs 0.655 on the evaluation set, recall@5 the same (0.15 to 0.3 alike).
    overlap_weight: float = 0.2


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    """A chunk chosen for the context, with where it came from and why."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    version: int
    chunk_index: int
    title: str
    heading_path: tuple[str, ...]
    text: str
    text_sha256: str
    vector_rank: int | None
    text_rank: int | None
    similarity: float | None
    fused_score: float


@dataclass(frozen=True, slots=True)
class RetrievalResult:
    """The chunks, how many candidates the access filter removed, and timings."""

    chunks: tuple[RetrievedChunk, ...]
    candidates_considered: int
    removed_by_access_filter: int
    search_ms: float  # both retrievers and the access count: one statement
    fusion_ms: float
    rerank_ms: float = 0.0  # embedding and scoring the candidates' sentence windows


@dataclass(frozen=True, slots=True)
class Shortlist:
    """What retrieval reads from the database for one query, ready to rank without it.

    `chunks` are the relevant readable candidates in fused order, as many as the ranking
    needs (`top_k`, or `rerank_depth` when that is more), with their rows' text: the
    access filter has been applied, and nothing after this needs a connection.
    """

    query: str
    query_vector: np.ndarray
    params: RetrievalParams
    chunks: tuple[RetrievedChunk, ...]
    # How many of `chunks` are re-ranked by their sentence windows (0: none).
    rerank_depth: int
    candidates_considered: int
    removed_by_access_filter: int
    vector_hits: int
    text_hits: int
    search_ms: float
    fusion_ms: float


async def shortlist(
    session: AsyncSession,
    *,
    query: str,
    query_vector: np.ndarray,
    reader: Reader,
    params: RetrievalParams,
    document_ids: Sequence[uuid.UUID] | None = None,
    rerank: bool,
) -> Shortlist:
    """The database half of `retrieve`: both retrievers, fusion, the chunks' rows.

    `params.fusion` "score" (the default): cosine similarity plus `text_weight` times the
    word-match score relative to the best one; "rrf": reciprocal rank fusion. With
    `rerank` (and a positive depth and window weight) the first `params.rerank_depth`
    relevant chunks are kept for `rank_shortlist` to re-rank.
    """
    await configure_hnsw(session, params)
    started = time.perf_counter()
    found = await search_candidates(
        session, query_vector, query, reader, limit=params.candidates, document_ids=document_ids
    )
    search_ms = (time.perf_counter() - started) * 1000
    vector_hits, text_hits = found.vector_hits, found.text_hits

    started = time.perf_counter()
    similarity = dict(vector_hits)
    if params.fusion == "rrf":
        ranked = reciprocal_rank_fusion(
            [[chunk_id for chunk_id, _ in vector_hits], text_hits], k=params.rrf_k
        )
    else:
        ranked = score_fusion(
            vector_hits,
            [(chunk_id, found.text_scores.get(chunk_id, 0.0)) for chunk_id in text_hits],
            text_weight=params.text_weight,
        )
    relevant = [
        f
        for f in ranked
        # Relevant: close enough in meaning, or holding every word of the question.
        if f.key in found.all_words or similarity.get(f.key, -1.0) >= params.min_similarity
    ]
    fusion_ms = (time.perf_counter() - started) * 1000

    depth = params.rerank_depth if rerank and params.window_weight > 0 else 0
    wanted = relevant[: max(params.top_k, depth)]
    details = {}
    if wanted:
        rows = await session.execute(
            text(
                "SELECT chunk_id, document_id, version, chunk_index, title, heading_path, text, "
                "text_sha256 FROM chunks WHERE chunk_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": [f.key for f in wanted]},
        )
        details = {row.chunk_id: row for row in rows}
    chunks = tuple(
        RetrievedChunk(
            chunk_id=f.key,
            document_id=details[f.key].document_id,
            version=details[f.key].version,
            chunk_index=details[f.key].chunk_index,
            title=details[f.key].title,
            heading_path=tuple(details[f.key].heading_path),
            text=details[f.key].text,
            text_sha256=details[f.key].text_sha256,
            vector_rank=f.ranks[0],
            text_rank=f.ranks[1],
            similarity=similarity.get(f.key),
            fused_score=f.score,
        )
        for f in wanted
        if f.key in details
    )
    return Shortlist(
        query=query,
        query_vector=query_vector,
        params=params,
        chunks=chunks,
        rerank_depth=depth,
        candidates_considered=len(set(similarity) | set(text_hits)),
        removed_by_access_filter=found.removed_by_access_filter,
        vector_hits=len(vector_hits),
        text_hits=len(text_hits),
        search_ms=search_ms,
        fusion_ms=fusion_ms,
    )


async def rank_shortlist(found: Shortlist, *, embedder: Embedder | None) -> RetrievalResult:
    """The other half of `retrieve`: re-rank the shortlist's head, keep `top_k`; no database.

    The head (`found.rerank_depth` chunks) is re-ranked by each chunk's best sentence
    window (services/window_rerank.py), which embeds the windows not yet cached: call
    this after the shortlist's transaction has ended, so that no pooled connection is
    held while the model runs.
    """
    params = found.params
    chunks = found.chunks
    rerank_ms = 0.0
    if found.rerank_depth and chunks:
        if embedder is None:
            raise ValueError("a shortlist made for re-ranking needs the embedder")
        started = time.perf_counter()
        head = chunks[: found.rerank_depth]
        best = await best_window_similarities(embedder, found.query_vector, [c.text for c in head])
        question_words = content_words(found.query)
        candidates = [
            (
                c.chunk_id,
                0.0 if c.similarity is None else c.similarity,
                params.overlap_weight * overlap(question_words, content_words(c.text)),
            )
            for c in head
        ]
        rescored = rescore(candidates, best, window_weight=params.window_weight)
        by_key = {c.chunk_id: c for c in head}
        chunks = (
            tuple(replace(by_key[r.key], fused_score=r.score) for r in rescored)
            + chunks[found.rerank_depth :]
        )
        rerank_ms = (time.perf_counter() - started) * 1000
    chunks = chunks[: params.top_k]
    metrics.retrieval_duration.labels("search").observe(found.search_ms / 1000)
    metrics.retrieval_duration.labels("fusion").observe(found.fusion_ms / 1000)
    log.info(
        "retrieval",
        search_ms=round(found.search_ms, 2),
        fusion_ms=round(found.fusion_ms, 3),
        rerank_ms=round(rerank_ms, 1),
        vector_hits=found.vector_hits,
        text_hits=found.text_hits,
        returned=len(chunks),
        removed_by_access_filter=found.removed_by_access_filter,
    )
    return RetrievalResult(
        chunks=chunks,
        candidates_considered=found.candidates_considered,
        removed_by_access_filter=found.removed_by_access_filter,
        search_ms=found.search_ms,
        fusion_ms=found.fusion_ms,
        rerank_ms=rerank_ms,
    )


async def retrieve(
    session: AsyncSession,
    *,
    query: str,
    query_vector: np.ndarray,
    reader: Reader,
    params: RetrievalParams,
    document_ids: Sequence[uuid.UUID] | None = None,
    embedder: Embedder | None = None,
) -> RetrievalResult:
    """Top `params.top_k` relevant readable chunks: `shortlist`, then `rank_shortlist`.

    With an `embedder`, the first `params.rerank_depth` are re-ranked by their best
    sentence window. Both halves run here while the caller's session holds its
    connection; a caller on a pooled connection calls `shortlist` in its transaction
    and `rank_shortlist` after it, so that the windows are embedded without one.
    """
    found = await shortlist(
        session,
        query=query,
        query_vector=query_vector,
        reader=reader,
        params=params,
        document_ids=document_ids,
        rerank=embedder is not None,
    )
    return await rank_shortlist(found, embedder=embedder)
