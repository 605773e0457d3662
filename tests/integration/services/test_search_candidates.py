"""One statement finds both retrievers' readable hits and the access filter's count.

`search_candidates` must give exactly what the separate searches give: the reader's
vector and full-text hits (the access filter inside each search), and how many of the
top hits without the access filter the reader may not read.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest
from sqlalchemy import text

from ragledger.models.documents import EMBEDDING_DIMENSIONS, ChunkRow
from ragledger.services import retrieval
from ragledger.services.documents import Reader
from ragledger.services.retrieval import (
    RetrievalParams,
    configure_hnsw,
    search_candidates,
    text_candidates,
    vector_candidates,
)

LIMIT = 8
PARAMS = RetrievalParams(
    top_k=5, candidates=LIMIT, rrf_k=60, min_similarity=0.0, ef_search=200, max_scan_tuples=20000
)
DOCUMENTS = [uuid.UUID(int=n + 1) for n in range(6)]
# Documents 0-1 are public, 2-3 for hr, 4-5 for finance.
GROUPS = [[], [], ["hr"], ["hr"], ["finance"], ["finance"]]
WORDS = ["leave", "budget", "travel", "policy", "expenses", "holiday"]


def _vector(rng: np.random.Generator) -> list[float]:
    v = rng.standard_normal(EMBEDDING_DIMENSIONS).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


@pytest.fixture
async def corpus(db) -> np.random.Generator:
    rng = np.random.default_rng(7)
    async with db.sessionmaker() as session, session.begin():
        for d, document_id in enumerate(DOCUMENTS):
            for i in range(10):
                text_value = f"{WORDS[d]} {WORDS[(d + i) % 6]} rules number {i}"
                session.add(
                    ChunkRow(
                        chunk_id=uuid.UUID(int=(d + 1) * 1000 + i),
                        document_id=document_id,
                        version=1,
                        chunk_index=i,
                        title=f"doc {d}",
                        heading_path=[],
                        text=text_value,
                        text_sha256=hashlib.sha256(text_value.encode()).hexdigest(),
                        start_offset=0,
                        end_offset=len(text_value),
                        token_count=5,
                        embedding=_vector(rng),
                        access_groups=GROUPS[d],
                        searchable=True,
                    )
                )
    return rng


READERS = {
    "admin": Reader(user_id=uuid.uuid4(), role="admin", groups=()),
    "hr": Reader(user_id=uuid.uuid4(), role="employee", groups=("hr",)),
    "nobody": Reader(user_id=uuid.uuid4(), role="employee", groups=()),
}
EVERYONE = READERS["admin"]


def _may_read(reader: Reader, chunk_id: uuid.UUID) -> bool:
    groups = GROUPS[chunk_id.int // 1000 - 1]
    return reader.sees_everything or not groups or bool(set(groups) & set(reader.groups))


async def _separately(session, vector, query, reader, document_ids):
    """The reader's hits by the separate searches, and the unreadable top hits, counted here."""
    await configure_hnsw(session, PARAMS)
    hits = await vector_candidates(session, vector, reader, limit=LIMIT, document_ids=document_ids)
    words = await text_candidates(session, query, reader, limit=LIMIT, document_ids=document_ids)
    top = {
        c
        for c, _ in await vector_candidates(
            session, vector, EVERYONE, limit=LIMIT, document_ids=document_ids
        )
    }
    top |= set(
        await text_candidates(session, query, EVERYONE, limit=LIMIT, document_ids=document_ids)
    )
    return hits, words, sum(not _may_read(reader, c) for c in top)


@pytest.mark.parametrize("reader", list(READERS), ids=list(READERS))
@pytest.mark.parametrize("query", ["leave rules", "budget expenses", "holiday", "nothing-matches"])
@pytest.mark.parametrize("scoped", [False, True], ids=["all-documents", "two-documents"])
async def test_one_statement_gives_what_the_separate_searches_give(
    db, corpus, reader: str, query: str, scoped: bool
) -> None:
    vector = np.asarray(_vector(corpus), dtype=np.float32)
    document_ids = [DOCUMENTS[1], DOCUMENTS[4]] if scoped else None
    async with db.sessionmaker() as session, session.begin():
        hits, words, removed = await _separately(
            session, vector, query, READERS[reader], document_ids
        )
        found = await search_candidates(
            session, vector, query, READERS[reader], limit=LIMIT, document_ids=document_ids
        )
    assert [c for c, _ in found.vector_hits] == [c for c, _ in hits]
    assert [s for _, s in found.vector_hits] == pytest.approx([s for _, s in hits])
    assert found.text_hits == words
    assert found.removed_by_access_filter == removed
    if reader == "admin":
        assert removed == 0
    if reader == "nobody" and not scoped and query != "nothing-matches":
        assert removed > 0  # the finance and hr chunks rank among the top hits


async def test_the_filtered_searches_do_not_run_when_every_top_hit_is_readable(db, corpus) -> None:
    """The point of the one statement: a reader who may read all top hits costs one search."""
    vector = np.asarray(_vector(corpus), dtype=np.float32)
    sql, params = retrieval._candidates_sql(READERS["hr"], [DOCUMENTS[0], DOCUMENTS[2]])
    bound = {"q": retrieval.vector_literal(vector), "query": "leave", "limit": LIMIT, **params}
    async with db.sessionmaker() as session, session.begin():
        await configure_hnsw(session, PARAMS)
        plan = "\n".join(
            row[0] for row in await session.execute(text("EXPLAIN ANALYZE " + sql), bound)
        )
    # Both filtered branches (vector and full text) are planned and never executed.
    assert plan.count("(never executed)") >= 2, plan
