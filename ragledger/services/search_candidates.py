"""The candidates of a search: both retrievers and the access filter in one statement.

The SQL side of retrieval (`services/retrieval.py` fuses, re-ranks and cuts what this
returns). Both retrievers filter to chunks the reader may read *inside* the query, so a
chunk the reader may not see never leaves the database: each ranks first without the
filter and, only when too few of its top rows are readable, runs the filtered search
(pgvector 0.8's iterative index scan keeps the HNSW search going when a restrictive
filter removes most neighbours). Who may read what, and retraction, come from
`document_access`, written in each command's own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.services.document_access import GROUP_READABLE_SQL, LIVE_SQL
from ragledger.services.documents import Reader


class HnswSettings(Protocol):
    """The two HNSW knobs of a search (RetrievalParams has them)."""

    @property
    def ef_search(self) -> int:
        """Candidates the HNSW graph search keeps (hnsw.ef_search)."""
        ...

    @property
    def max_scan_tuples(self) -> int:
        """How far an iterative scan may go (hnsw.max_scan_tuples)."""
        ...


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


async def configure_hnsw(session: AsyncSession, params: HnswSettings) -> None:
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
