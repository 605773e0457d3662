"""Hybrid retrieval under access control: pgvector HNSW + PostgreSQL full text, fused.

Both retrievers filter to chunks the reader may read *inside* the query, so a chunk the
reader may not see never leaves the database. Who may read what, and retraction, come
from `document_access`, which the commands write in their own transaction: an access
change or a retraction holds for every search after its command returned, even while
the `chunks` projection has not caught up. pgvector 0.8's iterative index scan keeps
the HNSW search going when a restrictive filter removes most neighbours, so a reader in
a small group still gets `top_k` rows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core import metrics
from ragledger.services.document_access import GROUP_READABLE_SQL, LIVE_SQL
from ragledger.services.documents import Reader
from ragledger.services.embedding import Embedder
from ragledger.services.rank_fusion import reciprocal_rank_fusion, score_fusion
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


# The question's words, any of them (plainto_tsquery joins its lexemes with AND, which
# a question phrased in an employee's own words almost never matches: full text alone
# found the answer in the top 5 for 4% of the evaluation's paraphrased questions with
# AND, 42% with OR). `all_words` keeps the old meaning, every word present, for the
# relevance test.
_ANY_WORD = (
    "(SELECT NULLIF(replace(plainto_tsquery('english', :query)::text, ' & ', ' | '), '')"
    "::tsquery AS q) AS words"
)
_ALL_WORDS = "c.tsv @@ websearch_to_tsquery('english', :query)"
# ts_rank with normalisation 1 (divide by 1 + log of the chunk's length) ranked the
# evaluation's answers higher than ts_rank_cd with OR queries (recall@5 0.45 vs 0.36).
_WORD_RANK = "ts_rank(c.tsv, words.q, 1)"

_READABLE = GROUP_READABLE_SQL


def _scope(document_ids: Sequence[uuid.UUID] | None) -> tuple[str, dict[str, object]]:
    """The chunks a search may return to anyone: searchable, not retracted, asked for."""
    clauses = ["c.searchable", LIVE_SQL]
    params: dict[str, object] = {}
    if document_ids:
        clauses.append("c.document_id = ANY(CAST(:document_ids AS uuid[]))")
        params["document_ids"] = list(document_ids)
    return " AND ".join(clauses), params


def _filters(
    reader: Reader, document_ids: Sequence[uuid.UUID] | None
) -> tuple[str, dict[str, object]]:
    where, params = _scope(document_ids)
    if not reader.sees_everything:
        where = f"{where} AND {_READABLE}"
        params["groups"] = list(reader.groups)
    return where, params


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form of a float32 vector (exact: repr of each float)."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


async def configure_hnsw(session: AsyncSession, params: RetrievalParams) -> None:
    """Per-transaction HNSW settings: search breadth and iterative scans."""
    await session.execute(
        text(
            "SELECT set_config('hnsw.ef_search', :ef, true), "
            "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
            "set_config('hnsw.max_scan_tuples', :max_tuples, true), "
            # A cached generic plan ignores the reader's groups and was 10x slower for
            # broad readers in bench/retrieval.py; plan each query for its parameters.
            "set_config('plan_cache_mode', 'force_custom_plan', true)"
        ),
        {"ef": str(params.ef_search), "max_tuples": str(params.max_scan_tuples)},
    )


async def vector_candidates(
    session: AsyncSession,
    query_vector: np.ndarray,
    reader: Reader,
    *,
    limit: int,
    document_ids: Sequence[uuid.UUID] | None = None,
) -> list[tuple[uuid.UUID, float]]:
    """(chunk_id, cosine similarity) of the nearest readable chunks, nearest first."""
    where, params = _filters(reader, document_ids)
    # relaxed_order may return rows slightly out of order: the outer query re-sorts
    # (pgvector's documented pattern, with the inner result materialized).
    rows = await session.execute(
        text(
            f"""
            WITH nearest AS MATERIALIZED (
                SELECT c.chunk_id, c.embedding <=> CAST(:q AS vector) AS distance
                FROM chunks AS c
                WHERE {where} AND c.embedding IS NOT NULL
                ORDER BY c.embedding <=> CAST(:q AS vector)
                LIMIT :limit
            )
            SELECT chunk_id, 1 - distance AS similarity FROM nearest ORDER BY distance
            """  # noqa: S608  (the WHERE clause is built from constants; values are bound)
        ),
        {"q": vector_literal(query_vector), "limit": limit, **params},
    )
    return [(row.chunk_id, float(row.similarity)) for row in rows]


async def text_candidates(
    session: AsyncSession,
    query: str,
    reader: Reader,
    *,
    limit: int,
    document_ids: Sequence[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """chunk_ids of readable chunks matching the words of `query`, best first."""
    where, params = _filters(reader, document_ids)
    rows = await session.execute(
        text(
            f"""
            SELECT c.chunk_id
            FROM chunks AS c, {_ANY_WORD}
            WHERE {where} AND c.tsv @@ words.q
            ORDER BY {_WORD_RANK} DESC, c.chunk_id
            LIMIT :limit
            """  # noqa: S608  (the WHERE clause is built from constants; values are bound)
        ),
        {"query": query, "limit": limit, **params},
    )
    return [row.chunk_id for row in rows]


@dataclass(frozen=True, slots=True)
class Candidates:
    """What both retrievers found for a reader, and how many top hits access removed."""

    vector_hits: list[tuple[uuid.UUID, float]]
    text_hits: list[uuid.UUID]
    removed_by_access_filter: int
    text_scores: dict[uuid.UUID, float] = field(default_factory=dict)
    # Text hits holding every word of the question (the others hold some).
    all_words: frozenset[uuid.UUID] = frozenset()


# How deep each retriever ranks without the access filter, as a multiple of the
# candidates asked for, for a reader who may not read everything. When that deeper
# list holds enough readable chunks (or every chunk there is), the reader's hits are
# its readable rows in order and the filtered search never runs.
UNFILTERED_DEPTH = 3


def candidates_sql(
    reader: Reader, document_ids: Sequence[uuid.UUID] | None
) -> tuple[str, dict[str, object]]:
    """One statement for both retrievers and the access filter's count.

    Each retriever ranks the chunks first without the access filter, `depth` deep, and
    notes which rows the reader may read. When at least `limit` of them are readable,
    or the ranking ran out of chunks before `depth`, the reader's hits are exactly the
    first `limit` readable rows, in order; only otherwise does the filtered search run
    (the access filter inside the index scan), behind an InitPlan's one-time filter.
    The count of unreadable top hits (the first `limit` rows), recorded with every
    retrieval, comes from the same ranked rows.
    """
    base, _ = _scope(document_ids)
    filtered, params = _filters(reader, document_ids)
    readable = "true" if reader.sees_everything else _READABLE
    sql = f"""
        WITH vector_top AS MATERIALIZED (
            SELECT c.chunk_id, c.embedding <=> CAST(:q AS vector) AS distance,
                   {readable} AS readable
            FROM chunks AS c
            WHERE {base} AND c.embedding IS NOT NULL
            ORDER BY c.embedding <=> CAST(:q AS vector)
            LIMIT :depth
        ), vector_ranked AS MATERIALIZED (
            SELECT chunk_id, distance, readable,
                   row_number() OVER (ORDER BY distance, chunk_id) AS overall,
                   row_number() OVER (PARTITION BY readable ORDER BY distance, chunk_id)
                       AS within
            FROM vector_top
        ), text_top AS MATERIALIZED (
            SELECT c.chunk_id, {_WORD_RANK} AS rank, {readable} AS readable,
                   {_ALL_WORDS} AS all_words
            FROM chunks AS c, {_ANY_WORD}
            WHERE {base} AND c.tsv @@ words.q
            ORDER BY {_WORD_RANK} DESC, c.chunk_id
            LIMIT :depth
        ), text_ranked AS MATERIALIZED (
            SELECT chunk_id, rank, readable, all_words,
                   row_number() OVER (ORDER BY rank DESC, chunk_id) AS overall,
                   row_number() OVER (PARTITION BY readable ORDER BY rank DESC, chunk_id)
                       AS within
            FROM text_top
        ), deep_enough AS MATERIALIZED (
            SELECT (SELECT count(*) FILTER (WHERE readable) >= :limit OR count(*) < :depth
                    FROM vector_top) AS vector,
                   (SELECT count(*) FILTER (WHERE readable) >= :limit OR count(*) < :depth
                    FROM text_top) AS text
        ), vector_hits AS MATERIALIZED (
            SELECT chunk_id, distance FROM vector_ranked
            WHERE readable AND within <= :limit AND (SELECT vector FROM deep_enough)
            UNION ALL
            (SELECT c.chunk_id, c.embedding <=> CAST(:q AS vector)
             FROM chunks AS c
             WHERE NOT (SELECT vector FROM deep_enough)
               AND {filtered} AND c.embedding IS NOT NULL
             ORDER BY c.embedding <=> CAST(:q AS vector)
             LIMIT :limit)
        ), text_hits AS MATERIALIZED (
            SELECT chunk_id, rank, all_words FROM text_ranked
            WHERE readable AND within <= :limit AND (SELECT text FROM deep_enough)
            UNION ALL
            (SELECT c.chunk_id, {_WORD_RANK}, {_ALL_WORDS}
             FROM chunks AS c, {_ANY_WORD}
             WHERE NOT (SELECT text FROM deep_enough)
               AND {filtered} AND c.tsv @@ words.q
             ORDER BY {_WORD_RANK} DESC, c.chunk_id
             LIMIT :limit)
        )
        SELECT 'vector' AS kind, chunk_id, 1 - distance AS score,
               row_number() OVER (ORDER BY distance, chunk_id) AS ordinal
        FROM vector_hits
        UNION ALL
        SELECT CASE WHEN all_words THEN 'text_all' ELSE 'text' END, chunk_id, rank,
               row_number() OVER (ORDER BY rank DESC, chunk_id)
        FROM text_hits
        UNION ALL
        SELECT 'removed', NULL, NULL, count(DISTINCT chunk_id)
        FROM (SELECT chunk_id FROM vector_ranked WHERE NOT readable AND overall <= :limit
              UNION ALL
              SELECT chunk_id FROM text_ranked WHERE NOT readable AND overall <= :limit)
             AS unreadable
    """  # noqa: S608  (the WHERE clauses are built from constants; values are bound)
    return sql, params


async def search_candidates(
    session: AsyncSession,
    query_vector: np.ndarray,
    query: str,
    reader: Reader,
    *,
    limit: int,
    document_ids: Sequence[uuid.UUID] | None = None,
    depth: int | None = None,
) -> Candidates:
    """Both retrievers' readable hits, best first, and the access filter's count; one trip.

    `depth` (at least `limit`) is how far each retriever ranks without the access
    filter: `UNFILTERED_DEPTH` x `limit` by default, `limit` for a reader who reads
    everything (nothing is filtered out for them).
    """
    if depth is None:
        depth = limit if reader.sees_everything else UNFILTERED_DEPTH * limit
    sql, params = candidates_sql(reader, document_ids)
    rows = await session.execute(
        text(sql),
        {
            "q": vector_literal(query_vector),
            "query": query,
            "limit": limit,
            "depth": max(depth, limit),
            **params,
        },
    )
    vector: list[tuple[int, uuid.UUID, float]] = []
    words: list[tuple[int, uuid.UUID]] = []
    scores: dict[uuid.UUID, float] = {}
    all_words: set[uuid.UUID] = set()
    removed = 0
    for kind, chunk_id, score, ordinal in rows:
        if kind == "vector":
            vector.append((ordinal, chunk_id, float(score)))
        elif kind in ("text", "text_all"):
            words.append((ordinal, chunk_id))
            scores[chunk_id] = float(score)
            if kind == "text_all":
                all_words.add(chunk_id)
        else:
            removed = int(ordinal)
    return Candidates(
        vector_hits=[(chunk_id, score) for _, chunk_id, score in sorted(vector)],
        text_hits=[chunk_id for _, chunk_id in sorted(words)],
        removed_by_access_filter=removed,
        text_scores=scores,
        all_words=frozenset(all_words),
    )


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
