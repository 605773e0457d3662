"""Sentence splitting, extractive selection and the support check, as pure functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragledger.services.answer_support import SupportBlock, score_sentences, strip_citations
from ragledger.services.extractive import (
    Candidate,
    ExtractiveParams,
    choose,
    compose,
    leans_back,
)
from ragledger.services.sentences import content_words, split_sentences

WRAPPED = """4. Redistribution. You may reproduce and distribute copies of the
   Work in any medium, provided that You meet the following conditions:

   (a) You must give any other recipients of the Work a copy of this
       License; and

   (b) You must retain all copyright notices. Mr. Smith wrote it, e.g. for
       us. It is short."""


def test_wrapped_lines_join_and_list_items_split() -> None:
    texts = [s.text for s in split_sentences(WRAPPED)]
    assert texts == [
        "4. Redistribution.",
        "You may reproduce and distribute copies of the Work in any medium, provided that "
        "You meet the following conditions:",
        "(a) You must give any other recipients of the Work a copy of this License; and",
        "(b) You must retain all copyright notices.",
        "Mr. Smith wrote it, e.g. for us.",
        "It is short.",
    ]


def test_spans_point_back_into_the_text() -> None:
    for sentence in split_sentences(WRAPPED):
        assert " ".join(WRAPPED[sentence.start : sentence.end].split()) == sentence.text


def test_citations_stay_with_their_sentence() -> None:
    texts = [s.text for s in split_sentences("Thirty days [1]. Unused days expire. [2] Yes.")]
    assert texts == ["Thirty days [1].", "Unused days expire. [2]", "Yes."]
    assert strip_citations("Thirty days [1][2].") == "Thirty days ."


@given(st.text(alphabet="ab .\n:[]1(", max_size=80))
def test_splitting_never_invents_words(text: str) -> None:
    words = " ".join(text.split())
    for sentence in split_sentences(text):
        assert sentence.text in words


def test_content_words_fold_endings_and_drop_function_words() -> None:
    question = content_words("Do I have to include copies of the licenses?")
    assert question == {"includ", "copy", "licens"}
    assert question <= content_words("Copy included, as the license says")


def _sentences(block: int, *texts: str):
    return [s for text in texts for s in split_sentences(text)]


def test_choose_brings_the_lead_in_of_a_list_item_and_the_sentence_a_pronoun_needs() -> None:
    blocks = {
        1: _sentences(1, "Leave rules follow:", "(a) Thirty days a year."),
        2: _sentences(2, "Sick leave needs a note.", "It must come from a doctor."),
    }
    candidates = [
        Candidate(1, 1, blocks[1][1], 0.62),
        Candidate(2, 1, blocks[2][1], 0.58),
        Candidate(2, 0, blocks[2][0], 0.30),
    ]
    params = ExtractiveParams(min_relevance=0.35, max_sentences=3, margin=0.1)
    chosen = choose(candidates, blocks, params)
    assert chosen == {1: {1: 0.62, 0: None}, 2: {1: 0.58, 0: None}}
    text, citations, report = compose(chosen, blocks)
    assert text == (
        "Leave rules follow: (a) Thirty days a year. [1]\n"
        "Sick leave needs a note. It must come from a doctor. [2]"
    )
    assert citations == (1, 2)
    assert report.groundedness == 1.0
    for check in report.sentences:
        assert text[check.start : check.end] == check.text
    assert [c.relevance for c in report.sentences] == [None, 0.62, None, 0.58]


def test_choose_keeps_only_sentences_near_the_best() -> None:
    blocks = {1: _sentences(1, "Employees get thirty days of leave.", "Parking is free here.")}
    candidates = [Candidate(1, 0, blocks[1][0], 0.7), Candidate(1, 1, blocks[1][1], 0.5)]
    chosen = choose(candidates, blocks, ExtractiveParams(0.35, 3, 0.08))
    assert chosen == {1: {0: 0.7}}


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("It must come from a doctor before the third day.", True),
        ("However, managers may approve exceptions in writing.", True),
        ("Short one.", True),
        ("Employees get thirty days of annual leave per year.", False),
    ],
)
def test_leans_back(sentence: str, expected: bool) -> None:
    assert leans_back(sentence) is expected


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_support_marks_unsupported_sentences_and_wrong_citations() -> None:
    answer = "Employees get thirty days of leave [2]. Pizza is served on Mondays [1]. Yes [1]."
    sentences = split_sentences(answer)
    blocks = [
        SupportBlock(1, "Employees get thirty days of leave per year."),
        SupportBlock(2, "Sick leave needs a note."),
    ]
    answer_vectors = np.stack([_unit(1, 0, 0), _unit(0, 0, 1), _unit(0, 1, 0)])
    block_vectors = [np.stack([_unit(1, 0.1, 0)]), np.stack([_unit(0, 1, 0)])]
    report = score_sentences(sentences, answer_vectors, blocks, block_vectors, min_score=0.5)
    first, second, third = report.sentences
    assert first.supported
    assert first.best_block == 1
    assert first.cited == (2,)
    assert first.unsupported_citations == (2,)
    assert not second.supported
    assert second.unsupported_citations == (1,)
    assert not third.checked
    assert not third.supported
    assert report.groundedness == 0.5
    assert (report.supported_count, report.unsupported_count) == (1, 1)
    assert report.citations_verified == ()
    assert report.citations_unsupported == (2, 1)
    recorded = report.record()
    assert recorded.groundedness == "0.500"
    assert recorded.sentences[0].score == f"{first.score:.3f}"


def test_an_answer_with_nothing_to_check_has_groundedness_zero() -> None:
    report = score_sentences([], np.zeros((0, 3), np.float32), [], [], min_score=0.5)
    assert report.groundedness == 0.0
    assert report.sentences == ()
