"""Ranking measures and the reading of an answer's outcome."""

from __future__ import annotations

import math
import uuid

import pytest

from ragledger.services.evaluation.answers import decline_of, score_answer, support_of
from ragledger.services.evaluation.metrics import mean, mrr_at_k, ndcg_at_k, recall_at_k
from ragledger.services.evaluation.run import rank_scores
from ragledger.services.prompting import NO_CONTEXT_ANSWER


def test_recall_and_mrr_look_only_at_the_first_k() -> None:
    hits = [False, False, True, False]
    assert recall_at_k(hits, 2) == 0.0
    assert recall_at_k(hits, 3) == 1.0
    assert mrr_at_k(hits, 2) == 0.0
    assert mrr_at_k(hits, 5) == pytest.approx(1 / 3)


def test_ndcg_divides_by_the_ideal_ranking_of_every_relevant_chunk() -> None:
    assert ndcg_at_k([True, False], 10, relevant_total=1) == 1.0
    assert ndcg_at_k([False, True], 10, relevant_total=1) == pytest.approx(1 / math.log2(3))
    # Two chunks hold the passage (overlap); finding one at rank 1 is not perfect.
    assert ndcg_at_k([True, False], 10, relevant_total=2) == pytest.approx(
        1 / (1 + 1 / math.log2(3))
    )
    assert ndcg_at_k([False] * 10, 10, relevant_total=0) == 0.0


def test_mean_skips_unknown_values() -> None:
    assert mean([1.0, None, 0.0]) == 0.5
    assert mean([None]) is None


def test_rank_scores_of_a_ranking() -> None:
    a, b, c = (uuid.UUID(int=n) for n in (1, 2, 3))
    scores = rank_scores([a, b, c], {b}, k=5)
    assert (scores.recall, scores.mrr, scores.first_relevant_rank) == (1.0, 0.5, 2)


CONTEXT = [uuid.UUID(int=1), uuid.UUID(int=2)]
TEXTS = {CONTEXT[0]: "The default level is WARNING.", CONTEXT[1]: "Unrelated text."}


def test_citation_precision_counts_cited_blocks_holding_the_evidence() -> None:
    scores = score_answer(
        done={"citations": [1, 2]},
        answer="It is WARNING [1][2].",
        context=CONTEXT,
        texts=TEXTS,
        evidence="default level is warning",
    )
    assert scores.citation_precision == 0.5
    assert scores.support is None  # the answer path said nothing about support
    assert scores.declined is False


def test_support_and_decline_are_read_from_the_answer_path_when_sent() -> None:
    assert support_of({"groundedness": "0.75"}) == 0.75
    assert support_of({"support": {"groundedness": 0.5, "sentences": []}}) == 0.5
    assert support_of({"citations": [1]}) is None
    scores = score_answer(
        done={"citations": [], "declined": True, "decline_reason": "low_relevance"},
        answer="The documents do not cover this.",
        context=CONTEXT,
        texts=TEXTS,
        evidence=None,
    )
    assert (scores.declined, scores.decline_reason, scores.citation_precision) == (
        True,
        "low_relevance",
        None,
    )


def test_a_decline_reason_sent_in_declined_is_a_decline() -> None:
    # The platform's done event: `declined` holds the reason, null when it answered.
    reason = "low_relevance: the best sentence scored 0.301, below the minimum 0.35"
    assert decline_of({"declined": reason}, "The documents do not cover this question.") == (
        True,
        reason,
    )
    assert decline_of({"declined": None}, "Python is named after Monty Python. [1]") == (
        False,
        None,
    )


def test_an_answer_without_context_is_a_decline() -> None:
    scores = score_answer(
        done={"citations": []}, answer=NO_CONTEXT_ANSWER, context=[], texts={}, evidence=None
    )
    assert (scores.declined, scores.decline_reason) == (True, "no_context")
