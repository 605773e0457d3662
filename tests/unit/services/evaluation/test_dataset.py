"""The shipped evaluation set: its corpus files, its questions, and every evidence string."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ragledger.services.evaluation.dataset import (
    UNANSWERABLE,
    DatasetError,
    corpus_paths,
    holds_evidence,
    load_dataset,
    normalise,
)
from ragledger.services.extraction import extract_text, sniff_content_type

SHIPPED = Path(__file__).resolve().parents[4] / "eval" / "python-docs.jsonl"


@pytest.fixture(scope="module")
def shipped():
    return load_dataset(SHIPPED)


@pytest.fixture(scope="module")
def extracted(shipped) -> dict[str, str]:
    """Each corpus file's text as the platform's extraction produces it."""
    texts = {}
    for entry, path in zip(shipped.corpus.files, corpus_paths(shipped.corpus), strict=True):
        data = path.read_bytes()
        texts[entry.path] = extract_text(data, sniff_content_type(data)).text
    return texts


def test_shipped_set_is_big_enough(shipped) -> None:
    kinds = Counter(q.type for q in shipped.questions)
    answerable = [q for q in shipped.questions if q.answerable]
    assert len(answerable) >= 80
    assert kinds[UNANSWERABLE] >= 10
    # Most questions are paraphrased the way people ask, not the page's keywords.
    assert kinds["paraphrase"] > len(answerable) / 2
    assert len(shipped.corpus.files) >= 10


def test_every_evidence_string_occurs_in_its_extracted_page(shipped, extracted) -> None:
    missing = [
        (q.id, q.source, q.evidence)
        for q in shipped.questions
        if q.answerable and not holds_evidence(extracted[q.source], q.evidence)
    ]
    assert missing == []


def test_unanswerable_questions_name_no_source(shipped) -> None:
    for q in shipped.questions:
        if not q.answerable:
            assert q.source is None
            assert q.evidence is None


def test_corpus_files_match_their_recorded_sha256(shipped) -> None:
    assert len(corpus_paths(shipped.corpus)) == len(shipped.corpus.files)


def _corpus(root: str = ".", sha256: str = "b") -> str:
    files = [{"path": "a.html", "sha256": sha256}]
    return json.dumps({"kind": "corpus", "name": "c", "root": root, "files": files})


def _question(qid: str = "q", kind: str = "t", evidence: str | None = "e") -> str:
    return json.dumps(
        {"kind": "question", "id": qid, "type": kind, "question": "?", "evidence": evidence}
    )


def test_a_changed_corpus_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.html").write_text("<p>hello</p>")
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join([_corpus("docs", "0" * 64), _question()]))
    dataset = load_dataset(path)
    with pytest.raises(DatasetError, match="expected 0000"):
        corpus_paths(dataset.corpus)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json"], "line 1: not JSON"),
        ([_question()], "no corpus"),
        ([_corpus()], "no questions"),
        (['{"kind": "other"}'], "line 1: 'kind' must be"),
        ([_corpus(), _question(kind="unanswerable")], "line 2: an unanswerable question has no"),
        ([_corpus(), _question(evidence=None)], "line 2: an unanswerable question has no"),
        ([_corpus(), _question(), _question()], "line 3: duplicate question id"),
        ([_corpus(), '{"kind": "question", "id": "q", "type": "t"}'], "line 2: 'question' must"),
    ],
)
def test_bad_datasets_name_the_problem(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_evidence_matching_ignores_case_spacing_and_quote_style() -> None:
    assert normalise("It\u2019s  OK\n to \u201cuse\u201d") == 'it\'s ok to "use"'
    assert holds_evidence("A Set is an\nunordered  collection", "set is an unordered")
    assert not holds_evidence("a set is ordered", "set is an unordered")
