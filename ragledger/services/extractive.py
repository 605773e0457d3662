"""Extractive answers: quote the context sentences that best answer the question.

No language model: every word of the answer is a sentence of a context block, quoted
with its block's number. Sentences are ranked by

    relevance = 0.8 x cosine(question, sentence) + 0.2 x share of the question's
                content words that the sentence contains

(the embedding model of retrieval, every sentence embedded in one call). The best few
within a margin of the best are kept; a kept sentence that cannot stand alone (it opens
with a pronoun or a connector, is very short, or is a list item after a lead-in ending
in ":") brings the sentence before it, and one ending in ":" the sentence after it.
Passages are ordered by relevance and keep document order inside. When even the best
sentence is below the minimum relevance, the answer declines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ragledger.services.answer_support import SentenceCheck, SupportBlock, SupportReport
from ragledger.services.embedding import Embedder
from ragledger.services.sentences import Sentence, content_words, overlap, split_sentences

COSINE_WEIGHT = 0.8
LEXICAL_WEIGHT = 0.2
METHOD = "quote"
# A quote shorter than this many words rarely makes sense without its neighbour.
SHORT_SENTENCE_WORDS = 6
_LIST_ITEM = re.compile(r"^(?:[-*\u2022+]|\(\w{1,4}\)|\d{1,3}[.)]|[a-zA-Z]\))\s")
# First words that point back at the sentence before.
_LEANS_BACK = frozenset(
    """
    it its this that these those they them their he she his her such however therefore
    thus hence but and or so also otherwise moreover furthermore additionally then
    which whereas nevertheless nonetheless instead likewise similarly accordingly
    consequently besides here there
    """.split()  # noqa: SIM905  (a word list reads better as text)
)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True, slots=True)
class ExtractiveParams:
    """How many sentences to quote and how relevant they must be."""

    min_relevance: float
    max_sentences: int
    margin: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A sentence of a context block with its relevance to the question."""

    block: int
    index: int
    sentence: Sentence
    relevance: float


@dataclass(frozen=True, slots=True)
class Extract:
    """An extractive answer: its text, the blocks it cites, and how each quote was chosen.

    `declined` says why nothing was quoted (then `text` is empty); `best_relevance` is
    the best sentence's score whether or not it was enough.
    """

    text: str
    citations: tuple[int, ...]
    report: SupportReport
    declined: str | None
    best_relevance: float


def leans_back(sentence: str) -> bool:
    """Whether a sentence needs the one before it to make sense."""
    match = _FIRST_WORD.search(sentence[:40])
    first = match.group().lower() if match else ""
    return first in _LEANS_BACK or len(sentence.split()) < SHORT_SENTENCE_WORDS


def rank(
    question: str,
    question_vector: np.ndarray,
    blocks: Sequence[SupportBlock],
    block_sentences: Sequence[Sequence[Sentence]],
    sentence_vectors: np.ndarray,
) -> list[Candidate]:
    """Every distinct sentence with its relevance, best first (pure).

    Overlapping chunks repeat sentences: a repeat keeps its first (better-ranked) block.
    """
    words = content_words(question)
    seen: set[str] = set()
    candidates: list[Candidate] = []
    row = 0
    for block, sentences in zip(blocks, block_sentences, strict=True):
        for index, sentence in enumerate(sentences):
            vector = sentence_vectors[row]
            row += 1
            if sentence.text in seen:
                continue
            seen.add(sentence.text)
            cosine = float(vector @ question_vector)
            lexical = overlap(words, content_words(sentence.text))
            relevance = COSINE_WEIGHT * cosine + LEXICAL_WEIGHT * lexical
            candidates.append(Candidate(block.n, index, sentence, relevance))
    candidates.sort(key=lambda c: c.relevance, reverse=True)
    return candidates


def choose(
    candidates: Sequence[Candidate],
    block_sentences: Mapping[int, Sequence[Sentence]],
    params: ExtractiveParams,
) -> dict[int, dict[int, float | None]]:
    """The sentences to quote, per block: index -> relevance (None for a neighbour)."""
    if not candidates:
        return {}
    best = candidates[0].relevance
    floor = max(params.min_relevance, best - params.margin)
    chosen: dict[int, dict[int, float | None]] = {}
    for candidate in candidates[: params.max_sentences]:
        if candidate.relevance < floor:
            break
        picked = chosen.setdefault(candidate.block, {})
        picked[candidate.index] = candidate.relevance
        sentences = block_sentences[candidate.block]
        text = candidate.sentence.text
        previous = sentences[candidate.index - 1].text if candidate.index > 0 else None
        if previous is not None and (
            leans_back(text) or (_LIST_ITEM.match(text) and previous.endswith(":"))
        ):
            picked.setdefault(candidate.index - 1, None)
        if text.endswith(":") and candidate.index + 1 < len(sentences):
            picked.setdefault(candidate.index + 1, None)
    return chosen


def compose(
    chosen: dict[int, dict[int, float | None]],
    block_sentences: Mapping[int, Sequence[Sentence]],
    *,
    method: str = METHOD,
) -> tuple[str, tuple[int, ...], SupportReport]:
    """The answer text, its citations and its report: passages of consecutive sentences.

    Each passage is its sentences as written, then its block's number; passages go in
    order of their best sentence's relevance, one per line.
    """
    passages: list[tuple[float, int, list[tuple[int, float | None]]]] = []
    for block, picked in chosen.items():
        run: list[tuple[int, float | None]] = []
        for index in sorted(picked):
            if run and index != run[-1][0] + 1:
                passages.append(_passage(block, run))
                run = []
            run.append((index, picked[index]))
        if run:
            passages.append(_passage(block, run))
    passages.sort(key=lambda p: p[0], reverse=True)
    parts: list[str] = []
    checks: list[SentenceCheck] = []
    offset = 0
    for _best, block, run in passages:
        if parts:
            parts.append("\n")
            offset += 1
        for position, (index, relevance) in enumerate(run):
            text = block_sentences[block][index].text
            if position:
                parts.append(" ")
                offset += 1
            checks.append(
                SentenceCheck(
                    text=text,
                    start=offset,
                    end=offset + len(text),
                    cited=(block,),
                    checked=True,
                    supported=True,
                    score=1.0,
                    best_block=block,
                    unsupported_citations=(),
                    relevance=relevance,
                )
            )
            parts.append(text)
            offset += len(text)
        marker = f" [{block}]"
        parts.append(marker)
        offset += len(marker)
    citations = tuple(dict.fromkeys(block for _best, block, _run in passages))
    report = SupportReport(
        method=method,
        sentences=tuple(checks),
        groundedness=1.0 if checks else 0.0,
        citations_verified=citations,
        citations_unsupported=(),
    )
    return "".join(parts), citations, report


def _passage(
    block: int, run: list[tuple[int, float | None]]
) -> tuple[float, int, list[tuple[int, float | None]]]:
    best = max((r for _i, r in run if r is not None), default=0.0)
    return best, block, list(run)


async def extract_answer(
    question: str,
    question_vector: np.ndarray,
    blocks: Sequence[SupportBlock],
    *,
    embedder: Embedder,
    params: ExtractiveParams,
) -> Extract:
    """Quote the best sentences of `blocks` for `question`, or decline with the reason."""
    block_sentences = {b.n: split_sentences(b.text) for b in blocks}
    texts = [s.text for b in blocks for s in block_sentences[b.n]]
    empty = SupportReport(METHOD, (), 0.0, (), ())
    if not texts:
        return Extract("", (), empty, "no_sentences: the context holds no sentence", 0.0)
    vectors = await embedder.embed(texts)
    candidates = rank(
        question,
        np.asarray(question_vector, dtype=np.float32),
        blocks,
        [block_sentences[b.n] for b in blocks],
        vectors,
    )
    best = candidates[0].relevance
    if best < params.min_relevance:
        return Extract(
            "",
            (),
            empty,
            f"low_relevance: the best sentence scored {best:.3f}, below the minimum "
            f"{params.min_relevance:g}",
            best,
        )
    text, citations, report = compose(choose(candidates, block_sentences, params), block_sentences)
    return Extract(text, citations, report, None, best)
