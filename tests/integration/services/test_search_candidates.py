"""One statement finds both retrievers' readable hits and the access filter's count.

`search_candidates` must give exactly what the separate searches give: the reader's
vector and full-text hits (the access filter inside each search), and how many of the
top hits without the access filter the reader may not read. It gets the reader's hits
from one deeper ranking without the access filter when that holds enough readable
chunks, and from the filtered searches otherwise: both ways are checked.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import numpy as np
import pytest
from sqlalchemy import text

from ragledger.models.documents import EMBEDDING_DIMENSIONS, ChunkRow, DocumentAccessRow
from ragledger.services.documents import Reader
from ragledger.services.retrieval import RetrievalParams
from ragledger.services.search_candidates import (
    candidates_sql,
    configure_hnsw,
    search_candidates,
    text_candidates,
    vector_candidates,
    vector_literal,
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
            session.add(
                DocumentAccessRow(
                    document_id=document_id,
                    access_groups=GROUPS[d],
                    public=not GROUPS[d],
                    retracted=False,
                    position=d + 1,
                )
            )
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
@pytest.mark.parametrize("depth", [None, LIMIT], ids=["deep", "shallow"])
async def test_one_statement_gives_what_the_separate_searches_give(
    db, corpus, reader: str, query: str, scoped: bool, depth: int | None
) -> None:
    vector = np.asarray(_vector(corpus), dtype=np.float32)
    document_ids = [DOCUMENTS[1], DOCUMENTS[4]] if scoped else None
    async with db.sessionmaker() as session, session.begin():
        hits, words, removed = await _separately(
            session, vector, query, READERS[reader], document_ids
        )
        found = await search_candidates(
            session,
            vector,
            query,
            READERS[reader],
            limit=LIMIT,
            document_ids=document_ids,
            depth=depth,
        )
    assert [c for c, _ in found.vector_hits] == [c for c, _ in hits]
    assert [s for _, s in found.vector_hits] == pytest.approx([s for _, s in hits])
    assert found.text_hits == words
    assert found.removed_by_access_filter == removed
    if reader == "admin":
        assert removed == 0
    if reader == "nobody" and not scoped and query != "nothing-matches":
        assert removed > 0  # the finance and hr chunks rank among the top hits


def _skipped_chunk_scans(plan: str) -> int:
    """How many scans of `chunks` the plan never executed (the filtered searches)."""
    return len(re.findall(r" on chunks c(?:_\d+)? .*\(never executed\)", plan))


async def _plan(session, reader: Reader, document_ids, vector, query: str, depth: int) -> str:
    sql, params = candidates_sql(reader, document_ids)
    bound = {
        "q": vector_literal(vector),
        "query": query,
        "limit": LIMIT,
        "depth": depth,
        **params,
    }
    await configure_hnsw(session, PARAMS)
    rows = await session.execute(text("EXPLAIN ANALYZE " + sql), bound)
    return "\n".join(row[0] for row in rows)


async def test_the_filtered_searches_do_not_run_when_every_top_hit_is_readable(db, corpus) -> None:
    """The point of the one statement: a reader who may read all top hits costs one search."""
    vector = np.asarray(_vector(corpus), dtype=np.float32)
    async with db.sessionmaker() as session, session.begin():
        plan = await _plan(
            session, READERS["hr"], [DOCUMENTS[0], DOCUMENTS[2]], vector, "leave", LIMIT
        )
    # Both filtered branches (vector and full text) are planned and never executed.
    assert _skipped_chunk_scans(plan) == 2, plan


async def test_a_deeper_unfiltered_ranking_spares_the_filtered_searches(db, corpus) -> None:
    """Unreadable top hits, but enough readable ones deeper down: still one search each."""
    vector = np.asarray(_vector(corpus), dtype=np.float32)
    reader, depth, query = READERS["hr"], 4 * LIMIT, "expenses rules"
    async with db.sessionmaker() as session, session.begin():
        await configure_hnsw(session, PARAMS)
        deep_vector = await vector_candidates(session, vector, EVERYONE, limit=depth)
        deep_text = await text_candidates(session, query, EVERYONE, limit=depth)
        found = await search_candidates(session, vector, query, reader, limit=LIMIT, depth=depth)
        deep = await _plan(session, reader, None, vector, query, depth)
        shallow = await _plan(session, reader, None, vector, query, LIMIT)
    # The situation this test is about: finance chunks among the top hits, and at least
    # LIMIT readable ones within the deeper ranking of each retriever (or all there are).
    assert found.removed_by_access_filter > 0
    for deeper in ([c for c, _ in deep_vector], deep_text):
        assert sum(_may_read(reader, c) for c in deeper) >= LIMIT or len(deeper) < depth
    assert _skipped_chunk_scans(deep) == 2, deep
    # Ranked only LIMIT deep, a retriever with an unreadable top hit has too few: its
    # filtered search runs.
    all_readable = [
        all(_may_read(reader, c) for c, _ in deep_vector[:LIMIT]),
        all(_may_read(reader, c) for c in deep_text[:LIMIT]),
    ]
    assert not all(all_readable)
    assert _skipped_chunk_scans(shallow) == sum(all_readable), shallow
