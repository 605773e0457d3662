"""Score fusion: cosine plus a bounded bonus for matching the question's words."""

from __future__ import annotations

import pytest

from ragledger.services.rank_fusion import score_fusion


def test_words_add_a_bonus_relative_to_the_best_word_match() -> None:
    fused = score_fusion(
        [("a", 0.60), ("b", 0.55), ("c", 0.30)],
        [("c", 0.8), ("b", 0.4)],
        text_weight=0.1,
    )
    scores = {f.key: f.score for f in fused}
    assert scores["a"] == pytest.approx(0.60)
    assert scores["b"] == pytest.approx(0.55 + 0.1 * 0.5)
    assert scores["c"] == pytest.approx(0.30 + 0.1)
    assert [f.key for f in fused] == ["b", "a", "c"]
    assert {f.key: f.ranks for f in fused} == {"a": (1, None), "b": (2, 2), "c": (3, 1)}


def test_a_common_word_cannot_outvote_a_clear_meaning_match() -> None:
    # RRF would put "word" (rank 1 in words, absent from vectors) level with "meaning".
    fused = score_fusion([("meaning", 0.7), ("other", 0.3)], [("word", 1.0)], text_weight=0.1)
    assert [f.key for f in fused] == ["meaning", "other", "word"]


def test_no_word_hits_leave_the_vector_order() -> None:
    fused = score_fusion([("a", 0.5), ("b", 0.5), ("c", 0.1)], [], text_weight=0.1)
    assert [f.key for f in fused] == ["a", "b", "c"]
