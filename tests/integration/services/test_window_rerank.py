"""Sentence windows scored with the bundled model: the answering sentence wins, cached."""

from __future__ import annotations

import numpy as np

from ragledger.services.embedding import get_embedder
from ragledger.services.window_rerank import WindowVectors, best_window_similarities

# A chunk mostly about other things, with the answer in one sentence, and one that is
# about the question's topic in general without answering it.
BURIED = (
    "Tabs introduce confusion, and are best left out. Use blank lines to separate "
    "functions and classes. When possible, put comments on a line of their own. "
    "Use docstrings. Wrap lines so that they don't exceed 79 characters. Name your "
    "classes and functions consistently."
)
GENERAL = (
    "Now that you are about to write longer, more complex pieces of Python, it is a good "
    "time to talk about coding style. Most languages can be written in different styles."
)


async def test_the_best_window_finds_the_buried_answer(settings) -> None:
    embedder = get_embedder(settings)
    (query,) = await embedder.embed(["How long may a line of code be?"])
    best = await best_window_similarities(embedder, query, [BURIED, GENERAL, ""])
    whole = await embedder.embed([BURIED, GENERAL])
    # The window holding the answer matches better than the whole chunk does.
    assert best[0] > float(whole[0] @ query)
    assert best[0] > best[1]
    assert best[2] == -1.0


async def test_window_vectors_are_embedded_once(settings) -> None:
    embedder = get_embedder(settings)
    cache = WindowVectors(capacity=2)
    first = await cache.vectors(embedder, ["one window", "two window", "one window"])
    assert first.shape == (3, 384)
    assert np.array_equal(first[0], first[2])
    again = await cache.vectors(embedder, ["two window"])
    assert np.array_equal(again[0], first[1])
    # Past its capacity the least recently used vector is dropped.
    await cache.vectors(embedder, ["three window"])
    assert len(cache) == 2
    assert (await cache.vectors(embedder, [])).shape == (0, 0)
