"""Check an answer against its context, sentence by sentence, and score its groundedness.

Each sentence of the answer (its citation markers removed) is scored against every
context block:

    support(sentence, block) = 0.6 x max cosine(sentence, each sentence of the block)
                             + 0.4 x share of the sentence's content words in the block

The cosine comes from the embedding model (all rows are unit vectors, so a dot
product); the lexical share catches names and numbers that embeddings blur ("30 days"
against "20 days"). A sentence is supported when its best block reaches
`SUPPORT_MIN_SCORE`; a citation is verified when the cited block itself reaches it for
the sentence that cites it. Sentences with fewer than two content words ("Yes [1].")
are not checked and do not count either way. Groundedness is the share of checked
sentences that are supported (0 when none is checked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragledger.events.questions import AnswerSupport, SentenceSupport
from ragledger.services.embedding import Embedder
from ragledger.services.sentences import Sentence, content_words, overlap, split_sentences

COSINE_WEIGHT = 0.6
LEXICAL_WEIGHT = 0.4
MIN_CONTENT_WORDS = 2
_CITATION = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True, slots=True)
class SupportBlock:
    """A context block as the checker sees it: its number and its text."""

    n: int
    text: str


@dataclass(frozen=True, slots=True)
class SentenceCheck:
    """How well one sentence of the answer is supported, and by which blocks.

    `start`/`end` locate it in the answer text; `scores` holds its support against each
    block, in block order; `relevance` is set for extractive quotes (their score against
    the question) and None for checked generated sentences.
    """

    text: str
    start: int
    end: int
    cited: tuple[int, ...]
    checked: bool
    supported: bool
    score: float
    best_block: int | None
    unsupported_citations: tuple[int, ...]
    relevance: float | None = None


@dataclass(frozen=True, slots=True)
class SupportReport:
    """Per-sentence support of an answer, its groundedness and the fate of its citations."""

    method: str
    sentences: tuple[SentenceCheck, ...]
    groundedness: float
    citations_verified: tuple[int, ...]
    citations_unsupported: tuple[int, ...]

    @property
    def supported_count(self) -> int:
        """Checked sentences that some block supports."""
        return sum(1 for s in self.sentences if s.checked and s.supported)

    @property
    def unsupported_count(self) -> int:
        """Checked sentences that no block supports."""
        return sum(1 for s in self.sentences if s.checked and not s.supported)

    def record(self) -> AnswerSupport:
        """The report as recorded in AnswerGenerated (scores as decimal strings)."""
        return AnswerSupport(
            method=self.method,
            groundedness=f"{self.groundedness:.3f}",
            supported_sentences=self.supported_count,
            unsupported_sentences=self.unsupported_count,
            citations_verified=self.citations_verified,
            citations_unsupported=self.citations_unsupported,
            sentences=tuple(
                SentenceSupport(
                    start=s.start,
                    end=s.end,
                    cited=s.cited,
                    checked=s.checked,
                    supported=s.supported,
                    score=f"{s.score:.3f}",
                    best_block=s.best_block,
                    unsupported_citations=s.unsupported_citations,
                    relevance=None if s.relevance is None else f"{s.relevance:.3f}",
                )
                for s in self.sentences
            ),
        )

    def summary(self) -> dict[str, object]:
        """What the asker gets in the `done` event: scores as numbers, spans in the answer."""
        return {
            "method": self.method,
            "groundedness": round(self.groundedness, 3),
            "supported_sentences": self.supported_count,
            "unsupported_sentences": self.unsupported_count,
            "citations_verified": list(self.citations_verified),
            "citations_unsupported": list(self.citations_unsupported),
            "sentences": [
                {
                    "start": s.start,
                    "end": s.end,
                    "cited": list(s.cited),
                    "checked": s.checked,
                    "supported": s.supported,
                    "score": round(s.score, 3),
                    "best_block": s.best_block,
                    "unsupported_citations": list(s.unsupported_citations),
                }
                for s in self.sentences
            ],
        }


def method_name(min_score: float) -> str:
    """The scoring rule as recorded, so that an auditor knows what a score means."""
    return f"cosine*{COSINE_WEIGHT}+lexical*{LEXICAL_WEIGHT}>={min_score:g}"


def strip_citations(text: str) -> str:
    """The sentence without its `[n]` markers, whitespace collapsed."""
    return " ".join(_CITATION.sub(" ", text).split())


def cited_in(text: str, available: int) -> tuple[int, ...]:
    """The valid block numbers a sentence cites, in order of first use."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= available and n not in seen:
            seen.append(n)
    return tuple(seen)


def score_sentences(
    answer_sentences: Sequence[Sentence],
    answer_vectors: np.ndarray,
    blocks: Sequence[SupportBlock],
    block_sentence_vectors: Sequence[np.ndarray],
    *,
    min_score: float,
) -> SupportReport:
    """The report from precomputed unit vectors: pure, so the rule is tested without a model.

    `answer_vectors` has one row per answer sentence (citations stripped);
    `block_sentence_vectors[b]` one row per sentence of block b.
    """
    block_words = [content_words(b.text) for b in blocks]
    numbers = [b.n for b in blocks]
    checks: list[SentenceCheck] = []
    verified: dict[int, None] = {}
    unsupported: dict[int, None] = {}
    for i, sentence in enumerate(answer_sentences):
        cited = cited_in(sentence.text, max(numbers, default=0))
        cited = tuple(n for n in cited if n in numbers)
        words = content_words(strip_citations(sentence.text))
        checked = len(words) >= MIN_CONTENT_WORDS
        scores: list[float] = []
        for b, vectors in enumerate(block_sentence_vectors):
            cosine = float(np.max(vectors @ answer_vectors[i])) if len(vectors) else 0.0
            scores.append(
                COSINE_WEIGHT * max(cosine, 0.0) + LEXICAL_WEIGHT * overlap(words, block_words[b])
            )
        best = int(np.argmax(scores)) if scores else None
        score = scores[best] if best is not None else 0.0
        bad = tuple(n for n in cited if scores[numbers.index(n)] < min_score) if checked else ()
        if checked:
            for n in cited:
                (unsupported if n in bad else verified)[n] = None
        checks.append(
            SentenceCheck(
                text=sentence.text,
                start=sentence.start,
                end=sentence.end,
                cited=cited,
                checked=checked,
                supported=checked and score >= min_score,
                score=score,
                best_block=numbers[best] if best is not None else None,
                unsupported_citations=bad,
            )
        )
    considered = [c for c in checks if c.checked]
    groundedness = (
        sum(1 for c in considered if c.supported) / len(considered) if considered else 0.0
    )
    return SupportReport(
        method=method_name(min_score),
        sentences=tuple(checks),
        groundedness=groundedness,
        # A block cited by one sentence it supports and one it does not is in both.
        citations_verified=tuple(verified),
        citations_unsupported=tuple(unsupported),
    )


async def check_support(
    answer: str, blocks: Sequence[SupportBlock], *, embedder: Embedder, min_score: float
) -> SupportReport:
    """Check every sentence of `answer` against `blocks`, embedding all sentences in one call."""
    answer_sentences = split_sentences(answer)
    block_sentences = [[s.text for s in split_sentences(b.text)] or [b.text] for b in blocks]
    texts = [strip_citations(s.text) or s.text for s in answer_sentences]
    flat = [text for sentences in block_sentences for text in sentences]
    vectors = await embedder.embed([*texts, *flat]) if texts else np.zeros((0, 0), np.float32)
    answer_vectors = vectors[: len(texts)]
    per_block: list[np.ndarray] = []
    offset = len(texts)
    for sentences in block_sentences:
        per_block.append(vectors[offset : offset + len(sentences)])
        offset += len(sentences)
    return score_sentences(answer_sentences, answer_vectors, blocks, per_block, min_score=min_score)
