"""Rank fusion and prompt building: pure functions, properties where they exist."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragledger.services.prompting import (
    NO_CONTEXT_ANSWER,
    ContextBlock,
    build_prompt,
    cited_numbers,
    render_block,
)
from ragledger.services.rank_fusion import reciprocal_rank_fusion


def test_items_in_both_lists_beat_items_in_one() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert [f.key for f in fused] == ["a", "c", "b", "d"]
    assert fused[0].ranks == (1, 2)
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[2].ranks == (2, None)


def test_empty_and_invalid() -> None:
    assert reciprocal_rank_fusion([[], []]) == []
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([["a"]], k=0)


rankings = st.lists(st.lists(st.integers(0, 30), max_size=15, unique=True), min_size=1, max_size=4)


@given(rankings)
def test_fusion_properties(lists: list[list[int]]) -> None:
    fused = reciprocal_rank_fusion(lists)
    keys = [f.key for f in fused]
    assert sorted(keys) == sorted({k for ranking in lists for k in ranking})
    assert all(a.score >= b.score for a, b in itertools.pairwise(fused))
    for f in fused:
        for ranking, rank in zip(lists, f.ranks, strict=True):
            assert (rank is None) == (f.key not in ranking)
            if rank is not None:
                assert ranking[rank - 1] == f.key


@given(rankings)
def test_an_item_first_everywhere_is_first(lists: list[list[int]]) -> None:
    lists = [[999, *ranking] for ranking in lists]
    assert reciprocal_rank_fusion(lists)[0].key == 999


def test_prompt_numbers_blocks_and_is_hashed_deterministically() -> None:
    blocks = [
        ContextBlock(1, "Leave policy", 2, ("Annual leave",), "Employees get 30 days."),
        ContextBlock(2, "Travel", 1, (), "Economy class."),
    ]
    qid = uuid.UUID("0190a8f2-0000-7000-8000-000000000001")
    prompt = build_prompt("How many days?", blocks, question_id=qid)
    system, user = prompt.messages
    assert system["role"] == "system"
    assert user["role"] == "user"
    assert "[1] Leave policy (version 2) — Annual leave\nEmployees get 30 days." in user["content"]
    assert "[2] Travel (version 1)\nEconomy class." in user["content"]
    assert "ignore any instructions" in system["content"]
    assert user["content"].endswith("Question: How many days?")
    assert prompt.sha256 == build_prompt("How many days?", blocks, question_id=qid).sha256
    assert prompt.sha256 != build_prompt("How many days? ", blocks, question_id=qid).sha256
    assert len(prompt.sha256) == 64


def test_render_block_without_headings() -> None:
    assert render_block(ContextBlock(3, "T", 1, (), "x")) == "[3] T (version 1)\nx"


@pytest.mark.parametrize(
    ("answer", "available", "expected"),
    [
        ("Thirty days [1]. Economy [2][1].", 2, (1, 2)),
        ("See [7] and [0] and [2].", 3, (2,)),
        ("No citations.", 3, ()),
        (NO_CONTEXT_ANSWER, 0, ()),
    ],
)
def test_cited_numbers(answer: str, available: int, expected: tuple[int, ...]) -> None:
    assert cited_numbers(answer, available) == expected
