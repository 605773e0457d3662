"""Small-to-big re-ranking: a chunk is as relevant as its best few-sentence window.

A 200-token chunk's one vector averages every topic in it, so a chunk holding the one
sentence that answers a question can rank below chunks that are about the question's
topic in general. The first candidates of the fused ranking are re-scored with their
windows of three consecutive sentences (every second sentence starts one, so the
windows overlap by one sentence and cover the chunk): a candidate's similarity becomes
the mean of its own cosine and its best window's, plus a bonus for the share of the
question's content words it holds. On the evaluation set this lifted recall@5 from 0.77
(score fusion) to 0.87; see docs/answers.md#retrieval and bench/results/quality.json.

Window vectors are cached in the process by the model and the window's text, so a
chunk that many questions retrieve is embedded once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from ragledger.services.embedding import Embedder
from ragledger.services.sentences import split_sentences

# Three sentences per window, a new one every second sentence: on the evaluation set
# this matched one window per sentence (recall@5 0.86 vs 0.85) with half the windows;
# one window per three sentences lost the keyword questions (recall@5 0.75).
WINDOW_SENTENCES: Final = 3
WINDOW_STRIDE: Final = 2
# Window vectors kept per process: 20,000 x 384 float32 is ~31 MB.
CACHE_WINDOWS: Final = 20_000


def sentence_windows(
    text: str, *, size: int = WINDOW_SENTENCES, stride: int = WINDOW_STRIDE
) -> list[str]:
    """Windows of `size` consecutive sentences of `text`, one every `stride` sentences.

    The first window is centred on the second sentence, so that with size 3 and stride 2
    every sentence is in at least one window; a text of fewer sentences is one window.
    """
    if size < 1 or stride < 1:
        raise ValueError("size and stride must be at least 1")
    sentences = [s.text for s in split_sentences(text)]
    if len(sentences) <= size:
        return [" ".join(sentences)] if sentences else []
    half = size // 2
    windows = []
    for centre in range(half, len(sentences) + half - 1, stride):
        start = max(0, centre - half)
        windows.append(" ".join(sentences[start : start + size]))
        if start + size >= len(sentences):
            break
    return windows


@dataclass(frozen=True, slots=True)
class Rescored[K: Hashable]:
    """A candidate's new score and the parts it was made from."""

    key: K
    score: float
    similarity: float
    best_window: float


def rescore[K: Hashable](
    candidates: Sequence[tuple[K, float, float]],
    best_windows: Sequence[float],
    *,
    window_weight: float,
) -> list[Rescored[K]]:
    """Re-rank (key, cosine, word bonus) candidates with their best window's cosine.

    score = (1 - window_weight) x cosine + window_weight x best window + word bonus;
    best first, ties kept in the candidates' order (the sort is stable).
    """
    if len(candidates) != len(best_windows):
        raise ValueError("one best window per candidate")
    rescored = [
        Rescored(
            key,
            (1.0 - window_weight) * similarity + window_weight * best + bonus,
            similarity,
            best,
        )
        for (key, similarity, bonus), best in zip(candidates, best_windows, strict=True)
    ]
    rescored.sort(key=lambda r: -r.score)
    return rescored


class WindowVectors:
    """A process-wide LRU of window vectors by model and text, filled by the embedder."""

    def __init__(self, capacity: int = CACHE_WINDOWS) -> None:
        self._capacity = capacity
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many window vectors are cached."""
        with self._lock:
            return len(self._vectors)

    @staticmethod
    def _key(model: str, text: str) -> str:
        return hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()

    async def vectors(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        """The unit vectors of `texts`, embedding only those not cached."""
        model = embedder.info.name
        keys = [self._key(model, t) for t in texts]
        with self._lock:
            found = {k: self._vectors[k] for k in keys if k in self._vectors}
            for k in found:
                self._vectors.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            embedded = await embedder.embed([text_of[k] for k in missing])
            with self._lock:
                for k, vector in zip(missing, embedded, strict=True):
                    found[k] = vector
                    self._vectors[k] = vector
                    self._vectors.move_to_end(k)
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        if not keys:
            return np.empty((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys])


window_vectors = WindowVectors()


async def best_window_similarities(
    embedder: Embedder, query_vector: np.ndarray, texts: Sequence[str]
) -> list[float]:
    """For each text, the highest cosine between the query and one of its windows.

    A text without any sentence gets -1.0 (nothing in it can match).
    """
    windows = [sentence_windows(t) for t in texts]
    flat = [w for ws in windows for w in ws]
    if not flat:
        return [-1.0] * len(texts)
    vectors = await window_vectors.vectors(embedder, flat)
    scores = vectors @ np.asarray(query_vector, dtype=np.float32)
    best: list[float] = []
    offset = 0
    for ws in windows:
        best.append(float(scores[offset : offset + len(ws)].max()) if ws else -1.0)
        offset += len(ws)
    return best
