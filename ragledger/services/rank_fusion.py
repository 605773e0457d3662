"""Reciprocal rank fusion: merge ranked lists without comparing their scores.

score(d) = sum over lists of 1 / (k + rank of d in that list), ranks starting at 1
(Cormack, Clarke and Büttcher, SIGIR 2009; k = 60 is the value of that paper).
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
