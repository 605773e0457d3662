"""Merge the vector and full-text rankings: by rank (RRF) or by score.

Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank of d in that list),
ranks starting at 1 (Cormack, Clarke and Büttcher, SIGIR 2009; k = 60 is the value of
that paper). It gives each list an equal vote, however weak its evidence: a chunk that
shares a common word with the question gains as much as one close in meaning.

Score fusion: cosine similarity + weight x (word-match score / the best word-match
score of the question), so words add a bounded bonus to meaning instead of a vote. On
the evaluation set (eval/python-docs.jsonl) it beat RRF and dense search alone; the
weight was chosen there (see bench/results/quality.json (bench/quality.py)).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fused[K: Hashable]:
    """One item with its rank in each list (None when absent) and its fused score."""

    key: K
    score: float
    ranks: tuple[int | None, ...]


def reciprocal_rank_fusion[K: Hashable](
    rankings: Sequence[Sequence[K]], *, k: int = 60
) -> list[Fused[K]]:
    """Fuse ranked lists of keys; best first, ties broken by best single rank, then order seen."""
    if k < 1:
        raise ValueError("k must be at least 1")
    ranks: dict[K, list[int | None]] = {}
    order: dict[K, int] = {}
    for list_index, ranking in enumerate(rankings):
        seen_here: set[K] = set()
        for position, key in enumerate(ranking, start=1):
            if key in seen_here:
                continue  # a duplicate inside one list counts once, at its best rank
            seen_here.add(key)
            if key not in ranks:
                ranks[key] = [None] * len(rankings)
                order[key] = len(order)
            ranks[key][list_index] = position
    fused = [
        Fused(key, sum(1.0 / (k + r) for r in key_ranks if r is not None), tuple(key_ranks))
        for key, key_ranks in ranks.items()
    ]
    fused.sort(
        key=lambda f: (
            -f.score,
            min(r for r in f.ranks if r is not None),
            order[f.key],
        )
    )
    return fused


def score_fusion[K: Hashable](
    vector_hits: Sequence[tuple[K, float]],
    text_hits: Sequence[tuple[K, float]],
    *,
    text_weight: float,
) -> list[Fused[K]]:
    """Fuse (key, cosine) and (key, word score) lists; best first, ties by list order.

    A key found only by words has no known similarity: it counts as 0, the bonus alone.
    `ranks` are each key's 1-based positions in the two lists, as RRF reports them.
    """
    best_text = max((score for _, score in text_hits), default=0.0)
    ranks: dict[K, list[int | None]] = {}
    scores: dict[K, float] = {}
    for position, (key, similarity) in enumerate(vector_hits, start=1):
        if key not in ranks:
            ranks[key] = [position, None]
            scores[key] = similarity
    for position, (key, score) in enumerate(text_hits, start=1):
        entry = ranks.setdefault(key, [None, None])
        if entry[1] is not None:
            continue
        entry[1] = position
        bonus = text_weight * score / best_text if best_text > 0 else 0.0
        scores[key] = scores.get(key, 0.0) + bonus
    order = {key: n for n, key in enumerate(ranks)}
    fused = [Fused(key, scores[key], tuple(r)) for key, r in ranks.items()]
    fused.sort(key=lambda f: (-f.score, order[f.key]))
    return fused
