"""The chunks for a smaller top_k are the first ones of a larger top_k's (issue 16).

Before, the candidate depth grew with top_k past RETRIEVAL_CANDIDATES, so chunks that
only a deeper list ranked gained fused score and reordered the top.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest

from ragledger.models.documents import EMBEDDING_DIMENSIONS, ChunkRow, DocumentAccessRow
from ragledger.services.answering import retrieval_params
from ragledger.services.documents import Reader
from ragledger.services.embedding import get_embedder
from ragledger.services.retrieval import retrieve

WORDS = ["leave", "budget", "travel", "policy", "expenses", "holiday", "laptop", "salary"]
ADMIN = Reader(user_id=uuid.uuid4(), role="admin", groups=())


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.mark.parametrize("mode", ["fused", "window-reranked", "rerank-off"])
async def test_top_5_is_the_first_five_of_top_20(db, settings, mode: str) -> None:
    # "rerank-off": an embedder is given, but RERANK_DEPTH=0 turns the re-ranking off.
    reranked = mode == "window-reranked"
    embedder = None if mode == "fused" else get_embedder(settings)
    rng = np.random.default_rng(11)
    query = _unit(rng.standard_normal(EMBEDDING_DIMENSIONS))
    async with db.sessionmaker() as session, session.begin():
        # Who may read each document is written by the commands (document_access).
        for d in range(1, 4):
            session.add(
                DocumentAccessRow(
                    document_id=uuid.UUID(int=d),
                    access_groups=[],
                    public=True,
                    retracted=False,
                    position=d,
                )
            )
        await session.flush()
        for i in range(120):
            words = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 4))
            body = f"{words} rules number {i}"
            # Vectors at every distance from the query, so the vector ranking is deep.
            vector = _unit(query * (i % 13) / 6 + rng.standard_normal(EMBEDDING_DIMENSIONS))
            session.add(
                ChunkRow(
                    chunk_id=uuid.UUID(int=i + 1),
                    document_id=uuid.UUID(int=1 + i % 3),
                    version=1,
                    chunk_index=i,
                    title="policies",
                    heading_path=[],
                    text=body,
                    text_sha256=hashlib.sha256(body.encode()).hexdigest(),
                    start_offset=0,
                    end_offset=len(body),
                    token_count=8,
                    embedding=vector.tolist(),
                    access_groups=[],
                    searchable=True,
                )
            )
    tuned = settings.model_copy(
        update={
            "retrieval_candidates": 6,
            "top_k_max": 20,
            "min_similarity": -1.0,
            "rerank_depth": 0 if mode == "rerank-off" else settings.rerank_depth,
        }
    )
    found = {}
    for top_k in (5, 20):
        async with db.sessionmaker() as session, session.begin():
            result = await retrieve(
                session,
                query="travel or holiday or salary",
                query_vector=query,
                reader=ADMIN,
                params=retrieval_params(tuned, top_k),
                embedder=embedder,
            )
        found[top_k] = [c.chunk_id for c in result.chunks]
        # The windows were scored only when re-ranking is on.
        assert (result.rerank_ms > 0) is reranked
    assert len(found[5]) == 5
    assert len(found[20]) == 20
    assert found[5] == found[20][:5]
