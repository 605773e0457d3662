"""Whether a pooled connection was out while the model ran: a spy around a real embedder.

Embedding (a forward pass, seconds for many texts on a loaded machine) must not hold a
database connection: a request that did would empty the pool under load. The spy wraps
the real embedder's `embed` and reads the engine's pool (`checkedout()`) when each call
starts and when it ends; a test on re-ranking tells its calls apart by their texts,
the sentence windows of the chunks that `load_chunks` wrote.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ragledger.models.documents import ChunkRow, DocumentAccessRow
from ragledger.services import window_rerank
from ragledger.services.embedding import Embedder
from ragledger.services.window_rerank import WindowVectors, sentence_windows

DOCUMENT = uuid.UUID(int=1)
TOPICS = ("annual leave", "travel expenses", "laptop security", "parental leave")
QUESTION = "How many days of annual leave may I carry over into next year?"


def chunk_text(topic: str, n: int) -> str:
    """A chunk of seven sentences about `topic`: three overlapping windows."""
    return " ".join(
        f"Rule {n}.{s} of the {topic} policy says that item {s} applies to every team."
        for s in range(7)
    )


TEXTS = tuple(chunk_text(topic, n) for n, topic in enumerate(TOPICS))
WINDOWS = frozenset(w for t in TEXTS for w in sentence_windows(t))

Call = tuple[tuple[str, ...], int, int]


@dataclass(slots=True)
class PoolSpy:
    """Embed calls seen: their texts and the pool's checked-out count before and after."""

    engine: AsyncEngine
    calls: list[Call] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch, embedder: Embedder) -> None:
        """Replace `embedder.embed` by a recording wrapper that calls the original."""
        embed: Callable[[Sequence[str]], Awaitable[np.ndarray]] = embedder.embed

        async def recording(texts: Sequence[str]) -> np.ndarray:
            before = self.engine.pool.checkedout()
            vectors = await embed(texts)
            self.calls.append((tuple(texts), before, self.engine.pool.checkedout()))
            return vectors

        monkeypatch.setattr(embedder, "embed", recording)

    def window_calls(self) -> list[Call]:
        """The calls that embedded the chunks' sentence windows (the re-ranking's)."""
        return [c for c in self.calls if c[0] and set(c[0]) <= WINDOWS]

    def windows_embedded(self) -> set[str]:
        """Every window the re-ranking had embedded."""
        return {w for texts, _, _ in self.window_calls() for w in texts}

    def checked_out_during_windows(self) -> list[tuple[int, int]]:
        """(before, after) of each window call: connections out of the pool."""
        return [(before, after) for _, before, after in self.window_calls()]


def cold_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window cache of the test's own: every window is embedded, none found cached."""
    monkeypatch.setattr(window_rerank, "window_vectors", WindowVectors())


async def load_chunks(sessionmaker: async_sessionmaker[AsyncSession], embedder: Embedder) -> None:
    """TEXTS as the chunks of one public document, embedded by `embedder`."""
    vectors = await embedder.embed(list(TEXTS))
    async with sessionmaker() as session, session.begin():
        session.add(
            DocumentAccessRow(
                document_id=DOCUMENT, access_groups=[], public=True, retracted=False, position=1
            )
        )
        await session.flush()
        for i, (body, vector) in enumerate(zip(TEXTS, vectors, strict=True)):
            session.add(
                ChunkRow(
                    chunk_id=uuid.UUID(int=i + 1),
                    document_id=DOCUMENT,
                    version=1,
                    chunk_index=i,
                    title="Policies",
                    heading_path=[],
                    text=body,
                    text_sha256=hashlib.sha256(body.encode()).hexdigest(),
                    start_offset=0,
                    end_offset=len(body),
                    token_count=60,
                    embedding=vector.tolist(),
                    access_groups=[],
                    searchable=True,
                )
            )
