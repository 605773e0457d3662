"""Ranking measures over binary relevance (a chunk holds the gold evidence or not).

Each takes the relevance of a ranking, best first. With one evidence passage per
question, recall@k is whether any of the first k chunks holds it; nDCG divides by the
ideal ranking of every chunk of the corpus that holds it (the overlap between chunks
can put one passage in two).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import fmean


def recall_at_k(relevant: Sequence[bool], k: int) -> float:
    """1.0 when one of the first k results is relevant, else 0.0."""
    return 1.0 if any(relevant[:k]) else 0.0


def mrr_at_k(relevant: Sequence[bool], k: int) -> float:
    """Reciprocal rank of the first relevant result within the first k (0.0: none)."""
    for rank, hit in enumerate(relevant[:k], start=1):
        if hit:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(relevant: Sequence[bool], k: int, *, relevant_total: int) -> float:
    """Normalised discounted cumulative gain at k; `relevant_total` chunks could be found."""
    if relevant_total <= 0:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(relevant[:k], 1) if hit)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(relevant_total, k) + 1))
    return dcg / ideal


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the known values (None when none is known)."""
    known = [v for v in values if v is not None]
    return fmean(known) if known else None
