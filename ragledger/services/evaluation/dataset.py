"""An evaluation set: the corpus files (paths and sha256) and the questions, one JSON a line.

The first line describes the corpus: `{"kind": "corpus", "name", "root", "files":
[{"path", "sha256"}, ...]}`, with `root` relative to the dataset file. Every other line is
a question: `{"kind": "question", "id", "type", "question", "evidence", "source"}`;
`evidence` is a short passage of the corpus that answers it (null for a question the
corpus does not answer, whose `type` is `unanswerable`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNANSWERABLE = "unanswerable"

# Typographic quotes as the HTML has them, against the straight ones people type.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


class DatasetError(ValueError):
    """The dataset file cannot be read as an evaluation set; the message names the line."""


@dataclass(frozen=True, slots=True)
class CorpusFile:
    """One document of the corpus, relative to the corpus root, with its expected hash."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Corpus:
    """The documents the questions are about."""

    name: str
    root: Path
    files: tuple[CorpusFile, ...]


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    """One question, its type, and the passage that answers it (None: unanswerable)."""

    id: str
    type: str
    question: str
    evidence: str | None
    source: str | None

    @property
    def answerable(self) -> bool:
        """Whether the corpus holds an answer."""
        return self.evidence is not None


@dataclass(frozen=True, slots=True)
class Dataset:
    """A parsed evaluation set and the sha256 of its file's bytes."""

    path: Path
    sha256: str
    corpus: Corpus
    questions: tuple[EvalQuestion, ...]


def normalise(text: str) -> str:
    """Text for evidence matching: straight quotes, single spaces, case folded."""
    return " ".join(text.translate(_QUOTES).split()).casefold()


def holds_evidence(text: str, evidence: str) -> bool:
    """Whether `text` contains the evidence passage, up to whitespace, quotes and case."""
    return normalise(evidence) in normalise(text)


def _field(record: dict[str, Any], name: str, line: int, *, optional: bool = False) -> Any:
    value = record.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"line {line}: {name!r} must be a non-empty string")
    return value


def load_dataset(path: Path) -> Dataset:
    """Read and check an evaluation set (DatasetError names the first bad line)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    corpus: Corpus | None = None
    questions: list[EvalQuestion] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.decode("utf-8", errors="strict").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DatasetError(f"line {number}: expected a JSON object")
        kind = record.get("kind")
        if kind == "corpus":
            if corpus is not None:
                raise DatasetError(f"line {number}: a second corpus line")
            files = record.get("files")
            if not isinstance(files, list) or not files:
                raise DatasetError(f"line {number}: 'files' must be a non-empty list")
            corpus = Corpus(
                name=_field(record, "name", number),
                root=(path.parent / _field(record, "root", number)).resolve(),
                files=tuple(
                    CorpusFile(_field(f, "path", number), _field(f, "sha256", number))
                    for f in files
                ),
            )
        elif kind == "question":
            question = EvalQuestion(
                id=_field(record, "id", number),
                type=_field(record, "type", number),
                question=_field(record, "question", number),
                evidence=_field(record, "evidence", number, optional=True),
                source=_field(record, "source", number, optional=True),
            )
            if question.id in seen:
                raise DatasetError(f"line {number}: duplicate question id {question.id!r}")
            if (question.type == UNANSWERABLE) == question.answerable:
                raise DatasetError(
                    f"line {number}: an unanswerable question has no evidence, "
                    "and every other question has one"
                )
            seen.add(question.id)
            questions.append(question)
        else:
            raise DatasetError(f"line {number}: 'kind' must be 'corpus' or 'question'")
    if corpus is None:
        raise DatasetError("the dataset has no corpus line")
    if not questions:
        raise DatasetError("the dataset has no questions")
    return Dataset(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        corpus=corpus,
        questions=tuple(questions),
    )


def corpus_paths(corpus: Corpus) -> list[Path]:
    """The corpus files on disk, each checked against its recorded sha256."""
    paths = []
    for entry in corpus.files:
        path = corpus.root / entry.path
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise DatasetError(f"corpus file {path}: {exc.strerror or exc}") from exc
        if digest != entry.sha256:
            raise DatasetError(f"corpus file {path} has sha256 {digest}, expected {entry.sha256}")
        paths.append(path)
    return paths
