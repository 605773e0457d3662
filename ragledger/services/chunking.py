"""Split a document's sections into overlapping chunks that fit the embedding model.

Chunking is pure: it takes the extracted text and a token counter and returns chunks
whose offsets point back into the document's full text, so a citation can always be
traced to the exact characters the model saw.

How it works, per section (a chunk never crosses a section boundary):

1. The section is cut into *units*: sentences (split at sentence-ending punctuation and
   at line breaks, inside paragraphs separated by blank lines). A sentence that alone
   exceeds `max_tokens` is cut into short runs of whole words, and a word that alone
   exceeds it (a base64 blob) into runs of characters. Each unit is counted once, and
   each remembers how strong the boundary before it is: paragraph > sentence > line >
   word > inside a word.
2. Chunks are packed greedily from units, summing their counts. Where the chunk must
   end, the strongest boundary that still leaves the chunk at least half full wins, so
   chunks end at paragraph ends where they can, at sentence ends otherwise.
3. The next chunk starts with the previous chunk's last whole units (or, when one
   sentence is longer than the overlap, its last words) worth at most `overlap_tokens`,
   and always starts strictly after the previous chunk did.
4. Sums of parts are only estimates of a concatenation's count (WordPiece, BPE), so
   every chunk's text, and every overlap, is counted again and shrunk until it fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ragledger.services.document_text import ExtractedText, Section

TokenCounter = Callable[[str], int]

# Boundary strengths, strongest first; a unit records the boundary before it.
_PARAGRAPH = 4
_SENTENCE = 3
_LINE = 2
_WORD = 1
_INSIDE_WORD = 0
_LEVELS = (_PARAGRAPH, _SENTENCE, _LINE, _WORD, _INSIDE_WORD)

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_NON_SPACE = re.compile(r"\S+")
# Terminal punctuation, optional closing quotes or brackets, then whitespace; whether it
# really ends a sentence is decided by `_ends_sentence` (abbreviations, next character).
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_LINE_ENDS_SENTENCE = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s*$")
_OPENERS = frozenset("\"'\u201c\u2018([")
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
# Common English abbreviations that are followed by a capitalised word mid-sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "hon", "gen",
        "col", "capt", "lt", "sgt", "gov", "sen", "rep", "pres", "vs", "etc", "inc",
        "ltd", "co", "corp", "dept", "univ", "no", "nos", "vol", "fig", "figs", "eq",
        "sec", "art", "ch", "p", "pp", "para", "approx", "est", "cf", "al", "ca",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
        "dec", "e.g", "i.e", "u.s", "u.k", "a.m", "p.m",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document's text, small enough to embed, under one heading path.

    `start` and `end` are character offsets into the document's full text, so
    `full_text[start:end] == text`; `token_count` is the caller's count of `text`.
    """

    index: int
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    token_count: int


def chunk_document(
    extracted: ExtractedText,
    *,
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Chunk every section of an extracted document, indexing chunks in document order.

    `count_tokens` must count the embedding model's tokens without special tokens; each
    chunk's count is at most `max_tokens`, and consecutive chunks of one section share
    at most `overlap_tokens` tokens.
    """
    return chunk_sections(
        extracted.sections,
        count_tokens=count_tokens,
        max_tokens=max_tokens,
        overlap_tokens=overlap_tokens,
    )


def chunk_sections(
    sections: Iterable[Section],
    *,
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Chunk sections in order; no chunk crosses a section boundary.

    Offsets come from each section's `start`, so they point into the full text only
    when the sections tile it (as `ExtractedText` guarantees).
    """
    _check_arguments(max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    chunks: list[Chunk] = []
    for section in sections:
        spans = _SectionChunker(section.text, count_tokens, max_tokens, overlap_tokens).run()
        for start, end, token_count in spans:
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=section.text[start:end],
                    start=section.start + start,
                    end=section.start + end,
                    heading_path=section.heading_path,
                    token_count=token_count,
                )
            )
    return chunks


def _check_arguments(*, max_tokens: int, overlap_tokens: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must not be negative, got {overlap_tokens}")
    if overlap_tokens >= max_tokens:
        raise ValueError(
            f"overlap_tokens ({overlap_tokens}) must be smaller than max_tokens ({max_tokens})"
        )


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """Narrow [start, end) to exclude surrounding whitespace (empty when all whitespace)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _ends_sentence(text: str, punct_start: int, punct_end: int, next_start: int) -> bool:
    """Whether the punctuation at [punct_start, punct_end) ends a sentence."""
    if next_start >= len(text):
        return True
    following = text[next_start]
    if not (following.isupper() or following.isdigit() or following in _OPENERS):
        return False
    if text[punct_start:punct_end] != ".":
        return True
    word_start = punct_start
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:punct_start].lstrip("\"'\u201c\u2018([")
    if len(word) == 1 and word.isupper():
        return False  # an initial, as in "J. Smith"
    return word.lower() not in _ABBREVIATIONS and not _DOTTED_ACRONYM.fullmatch(word)


def _sentence_spans(text: str, start: int, end: int) -> Iterable[tuple[int, int, int]]:
    """Yield (start, end, level) of stripped sentences and lines in a paragraph."""
    level = _PARAGRAPH
    line_start = start
    while line_start < end:
        newline = text.find("\n", line_start, end)
        line_end = end if newline < 0 else newline
        piece_start = line_start
        for match in _SENTENCE_END.finditer(text, line_start, line_end):
            punct_end = match.start() + len(match.group().rstrip().rstrip("\"'\u201d\u2019)]"))
            if _ends_sentence(text, match.start(), punct_end, match.end()):
                span = _stripped(text, piece_start, match.end())
                if span[0] < span[1]:
                    yield span[0], span[1], level
                    level = _SENTENCE
                piece_start = match.end()
        span = _stripped(text, piece_start, line_end)
        if span[0] < span[1]:
            yield span[0], span[1], level
            ends_sentence = _LINE_ENDS_SENTENCE.search(text, span[0], span[1]) is not None
            level = _SENTENCE if ends_sentence else _LINE
        line_start = line_end + 1


class _SectionChunker:
    """Chunk one section's text; offsets are relative to that text."""

    def __init__(
        self, text: str, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int
    ) -> None:
        self.text = text
        self.count = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        # Parallel lists rather than objects: a 1,000-page document has ~10^5 units.
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.tokens: list[int] = []
        self.levels: list[int] = []

    def run(self) -> list[tuple[int, int, int]]:
        """Return (start, end, token_count) for each chunk of the section, in order."""
        self._build_units()
        return self._pack()

    # -- units --------------------------------------------------------------------

    def _add_unit(self, start: int, end: int, tokens: int, level: int) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.tokens.append(tokens)
        self.levels.append(level)

    def _build_units(self) -> None:
        text = self.text
        paragraph_start = 0
        breaks = [(m.start(), m.end()) for m in _PARAGRAPH_BREAK.finditer(text)]
        breaks.append((len(text), len(text)))
        for break_start, break_end in breaks:
            start, end = _stripped(text, paragraph_start, break_start)
            paragraph_start = break_end
            if start == end:
                continue
            for sentence_start, sentence_end, level in _sentence_spans(text, start, end):
                tokens = self.count(text[sentence_start:sentence_end])
                if tokens <= self.max_tokens:
                    self._add_unit(sentence_start, sentence_end, tokens, level)
                else:
                    self._add_words(sentence_start, sentence_end, tokens, level)

    def _add_words(self, start: int, end: int, tokens: int, level: int) -> None:
        """Cut an over-long sentence of `tokens` tokens into runs of whole words."""
        text = self.text
        words = [(m.start(), m.end()) for m in _NON_SPACE.finditer(text, start, end)]
        # Runs of about max_tokens / 16 tokens rather than single words: one count per
        # word costs a tokenizer call per word (seconds on a megabyte without any
        # punctuation), while runs this small still fill chunks to within a few tokens.
        target = max(1, self.max_tokens // 16)
        per_run = max(1, len(words) * target // max(tokens, 1))
        for first in range(0, len(words), per_run):
            run = words[first : first + per_run]
            run_start, run_end = run[0][0], run[-1][1]
            run_tokens = tokens if len(words) == 1 else self.count(text[run_start:run_end])
            if run_tokens <= self.max_tokens:
                self._add_unit(run_start, run_end, run_tokens, level)
            elif len(run) == 1:
                self._add_word_pieces(run_start, run_end, run_tokens, level)
            else:
                for word_start, word_end in run:
                    word_tokens = self.count(text[word_start:word_end])
                    if word_tokens <= self.max_tokens:
                        self._add_unit(word_start, word_end, word_tokens, level)
                    else:
                        self._add_word_pieces(word_start, word_end, word_tokens, level)
                    level = _WORD
            level = _WORD

    def _add_word_pieces(self, start: int, end: int, tokens: int, level: int) -> None:
        """Cut one over-long word of `tokens` tokens into character runs that each fit."""
        text = self.text
        # Characters per piece from the whole word's density, aimed a little short: a
        # long blob then costs about one count per piece, where a search for the longest
        # fitting run would cost several (an overshoot costs a recount of the piece).
        guess = max(1, (end - start) * self.max_tokens * 9 // (tokens * 10))
        position = start
        while position < end:
            take = min(guess, end - position)
            count = self.count(text[position : position + take])
            while count > self.max_tokens:
                if take == 1:
                    raise ValueError(
                        f"a single character counts {count} tokens, more than "
                        f"max_tokens ({self.max_tokens})"
                    )
                take = max(1, min(take - 1, take * self.max_tokens * 9 // (count * 10)))
                count = self.count(text[position : position + take])
            self._add_unit(position, position + take, count, level)
            level = _INSIDE_WORD
            position += take

    # -- packing ------------------------------------------------------------------

    def _pack(self) -> list[tuple[int, int, int]]:
        starts, ends, tokens = self.starts, self.ends, self.tokens
        unit_count = len(starts)
        spans: list[tuple[int, int, int]] = []
        first = 0
        # The overlap carried into the next chunk: its start offset and its token count.
        carried: tuple[int, int] | None = None
        while first < unit_count:
            carried_tokens = carried[1] if carried else 0
            cut = self._choose_cut(first, carried_tokens)
            chunk_start = carried[0] if carried else starts[first]
            if cut - 1 == first and carried is None:
                count = tokens[first]  # one unit, counted exactly when it was made
            else:
                count = self.count(self.text[chunk_start : ends[cut - 1]])
            while count > self.max_tokens:
                # The parts' sum underestimated the whole: give back a unit, then the
                # overlap; a lone unit was counted exactly, so this ends.
                if cut - 1 > first:
                    cut -= 1
                elif carried is not None:
                    carried = None
                    chunk_start = starts[first]
                else:
                    raise ValueError(
                        "count_tokens is not deterministic: the same text counted "
                        f"{tokens[first]} and then {count} tokens"
                    )
                count = self.count(self.text[chunk_start : ends[cut - 1]])
            spans.append((chunk_start, ends[cut - 1], count))
            if cut < unit_count:
                carried = self._overlap(first, cut, chunk_start)
            first = cut
        return spans

    def _choose_cut(self, first: int, carried_tokens: int) -> int:
        """Return the index of the first unit after the chunk that starts at `first`.

        The chunk takes as many units as fit; if the section does not end there, it
        ends at the strongest boundary that keeps it at least half full.
        """
        tokens, levels = self.tokens, self.levels
        unit_count = len(tokens)
        total = carried_tokens
        reach = first
        # The overlap budget leaves room for the first unit, so every chunk takes one.
        while reach < unit_count and (reach == first or total + tokens[reach] <= self.max_tokens):
            total += tokens[reach]
            reach += 1
        if reach == unit_count:
            return reach
        min_fill = self.max_tokens // 2
        best = dict.fromkeys(_LEVELS, 0)
        fills = dict.fromkeys(_LEVELS, 0)
        total = carried_tokens
        for cut in range(first + 1, reach + 1):
            total += tokens[cut - 1]
            for level in _LEVELS:
                if levels[cut] >= level:
                    best[level] = cut
                    fills[level] = total
        for level in _LEVELS:
            if best[level] and fills[level] >= min_fill:
                return best[level]
        return reach

    def _overlap(self, first: int, cut: int, chunk_start: int) -> tuple[int, int] | None:
        """Return the start and token count of the overlap the next chunk begins with.

        It is the end of the chunk [chunk_start, ends[cut - 1]): whole units, topped up
        with the last words of the unit before them when they come to under half the
        budget, and it begins strictly after `chunk_start` so chunking always advances.
        """
        budget = min(self.overlap_tokens, self.max_tokens - self.tokens[cut])
        if budget <= 0:
            return None
        starts, ends, tokens = self.starts, self.ends, self.tokens
        earliest = first if chunk_start < starts[first] else first + 1
        begin = cut
        total = 0
        while begin - 1 >= earliest and total + tokens[begin - 1] <= budget:
            begin -= 1
            total += tokens[begin]
        candidates: list[int] = []
        if total * 2 < budget and begin - 1 >= first:
            partial = self._tail_words(begin - 1, budget - total)
            if partial is not None and partial > chunk_start:
                candidates.append(partial)
        candidates.extend(starts[unit] for unit in range(begin, cut))
        end = ends[cut - 1]
        for start in candidates:
            if start == starts[cut - 1]:
                count = tokens[cut - 1]
            else:
                count = self.count(self.text[start:end])
            if count <= budget:
                return start, count
        return None

    def _tail_words(self, unit: int, budget: int) -> int | None:
        """Return where the most trailing words of `unit` that fit in `budget` begin.

        Never the unit's first word: a whole unit that fits is taken as a unit.
        """
        text = self.text
        end = self.ends[unit]
        word_starts = [m.start() for m in _NON_SPACE.finditer(text, self.starts[unit], end)]
        if len(word_starts) < 2:
            return None
        # Binary search over how many trailing words to keep: counts grow with words.
        low, high = 0, len(word_starts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.count(text[word_starts[-middle] : end]) <= budget:
                low = middle
            else:
                high = middle - 1
        return word_starts[-low] if low else None
