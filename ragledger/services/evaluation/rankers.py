"""The three rankings an evaluation compares, over the same chunks and the same reader.

- `hybrid`: the platform's `retrieve` (HNSW + full text, fused), exactly as questions use it.
- `exact_dense`: the same model's vectors ranked by brute-force cosine over every
  readable chunk of the corpus, no index: the baseline the hybrid must beat.
- `full_text`: PostgreSQL full text alone, as the platform runs it
  (`websearch_to_tsquery('english')`, ranked by `ts_rank_cd`); not Okapi BM25.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.services.documents import Reader
from ragledger.services.embedding import Embedder
from ragledger.services.retrieval import RetrievalParams, retrieve
from ragledger.services.search_candidates import text_candidates

_READABLE = "(c.access_groups = '{}' OR c.access_groups && CAST(:groups AS text[]))"


@dataclass(frozen=True, slots=True)
class ChunkCatalogue:
    """Every searchable chunk of the evaluated documents that the reader may read."""

    chunk_ids: tuple[uuid.UUID, ...]
    texts: tuple[str, ...]
    vectors: np.ndarray  # (n, dims) float32, unit rows

    def text_of(self) -> dict[uuid.UUID, str]:
        """Chunk text by id."""
        return dict(zip(self.chunk_ids, self.texts, strict=True))


async def load_catalogue(
    session: AsyncSession, *, reader: Reader, document_ids: Sequence[uuid.UUID]
) -> ChunkCatalogue:
    """The readable, searchable chunks of `document_ids`, with their stored vectors."""
    where = "c.searchable AND c.embedding IS NOT NULL AND c.document_id = ANY(:ids)"
    params: dict[str, object] = {"ids": list(document_ids)}
    if not reader.sees_everything:
        where += f" AND {_READABLE}"
        params["groups"] = list(reader.groups)
    sql = (
        "SELECT c.chunk_id, c.text, CAST(c.embedding AS real[]) AS vector "  # noqa: S608
        f"FROM chunks AS c WHERE {where} ORDER BY c.chunk_id"  # (constants; values bound)
    )
    rows = (await session.execute(text(sql), params)).all()
    vectors = np.asarray([row.vector for row in rows], dtype=np.float32)
    if not rows:
        vectors = np.empty((0, 0), dtype=np.float32)
    return ChunkCatalogue(
        chunk_ids=tuple(row.chunk_id for row in rows),
        texts=tuple(row.text for row in rows),
        vectors=vectors,
    )


def exact_dense(catalogue: ChunkCatalogue, query_vector: np.ndarray, *, k: int) -> list[uuid.UUID]:
    """The k chunks nearest the query by exact cosine (ties: lower chunk id first)."""
    if not catalogue.chunk_ids:
        return []
    scores = catalogue.vectors @ np.asarray(query_vector, dtype=np.float32)
    # Stable sort on the negated scores keeps the catalogue's chunk-id order for ties.
    order = np.argsort(-scores, kind="stable")[:k]
    return [catalogue.chunk_ids[i] for i in order]


async def full_text(
    session: AsyncSession,
    query: str,
    *,
    reader: Reader,
    document_ids: Sequence[uuid.UUID],
    k: int,
) -> list[uuid.UUID]:
    """The platform's full-text search alone, best first."""
    return await text_candidates(session, query, reader, limit=k, document_ids=document_ids)


async def hybrid(
    session: AsyncSession,
    query: str,
    query_vector: np.ndarray,
    *,
    reader: Reader,
    params: RetrievalParams,
    document_ids: Sequence[uuid.UUID],
    embedder: Embedder | None = None,
) -> list[uuid.UUID]:
    """The platform's retrieval, as a question runs it (re-ranked when given `embedder`)."""
    result = await retrieve(
        session,
        query=query,
        query_vector=query_vector,
        reader=reader,
        params=params,
        document_ids=document_ids,
        embedder=embedder,
    )
    return [chunk.chunk_id for chunk in result.chunks]
