"""Small-to-big re-ranking: sentence windows and the re-scoring of candidates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragledger.services.sentences import split_sentences
from ragledger.services.window_rerank import rescore, sentence_windows


def _text(n: int) -> str:
    return " ".join(f"Sentence number {i} says something." for i in range(n))


def test_windows_of_three_sentences_start_every_second_sentence() -> None:
    windows = sentence_windows(_text(6))
    assert windows == [
        "Sentence number 0 says something. Sentence number 1 says something. "
        "Sentence number 2 says something.",
        "Sentence number 2 says something. Sentence number 3 says something. "
        "Sentence number 4 says something.",
        "Sentence number 4 says something. Sentence number 5 says something.",
    ]


def test_a_short_text_is_one_window_and_an_empty_one_none() -> None:
    assert sentence_windows(_text(2)) == [_text(2)]
    assert sentence_windows("") == []
    assert sentence_windows("---") == []


def test_bad_window_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        sentence_windows("One. Two.", size=0)


@given(st.integers(min_value=1, max_value=40))
def test_every_sentence_is_in_a_window(n: int) -> None:
    sentences = [s.text for s in split_sentences(_text(n))]
    windows = sentence_windows(_text(n))
    assert all(any(s in w for w in windows) for s in sentences)
    assert len(windows) <= max(1, (n + 1) // 2)


def test_rescore_mixes_the_chunk_and_its_best_window_and_keeps_the_word_bonus() -> None:
    rescored = rescore(
        [("general", 0.60, 0.0), ("answer", 0.45, 0.05), ("other", 0.40, 0.0)],
        [0.55, 0.80, 0.40],
        window_weight=0.5,
    )
    assert [r.key for r in rescored] == ["answer", "general", "other"]
    assert rescored[0].score == pytest.approx(0.5 * 0.45 + 0.5 * 0.80 + 0.05)
    assert rescored[0].best_window == 0.80


def test_rescore_without_window_weight_keeps_the_fused_order() -> None:
    candidates = [("a", 0.5, 0.1), ("b", 0.6, 0.0), ("c", 0.6, 0.0)]
    rescored = rescore(candidates, [0.9, 0.1, 0.1], window_weight=0.0)
    assert [r.key for r in rescored] == ["a", "b", "c"]


def test_rescore_needs_one_window_score_per_candidate() -> None:
    with pytest.raises(ValueError, match="one best window"):
        rescore([("a", 0.5, 0.0)], [], window_weight=0.5)
