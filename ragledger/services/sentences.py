"""Split text into sentences for quoting and checking: pure functions, no I/O.

Unlike the chunker, which treats a line break as a boundary, this joins the lines of a
paragraph (plain text is often wrapped at 72 columns), and breaks only at blank lines,
list items, headings and sentence-ending punctuation. Sentences keep their words
exactly; only runs of whitespace become one space, so a quote is the source's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# A line that starts a new unit rather than continuing the previous line: a list item
# ("- ", "* ", "1. ", "(a) ", "a) "), a Markdown heading or a table row.
_NEW_UNIT_LINE = re.compile(
    r"^\s*(?:(?:[-*\u2022+]|\(\w{1,4}\)|\d{1,3}[.)]|[a-zA-Z]\))\s|#{1,6}\s|\|)"
)
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?:\s*\[\d{1,3}\])*\s+")
_SPACES = re.compile(r"\s+")
_OPENERS = frozenset("\"'\u201c\u2018([")
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "inc", "ltd",
        "co", "corp", "dept", "no", "nos", "vol", "fig", "sec", "art", "ch", "p", "pp",
        "para", "approx", "cf", "al", "e.g", "i.e", "u.s", "u.k", "a.m", "p.m",
    }
)  # fmt: skip
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# Function words carry no evidence: overlap is measured on the other words.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each
    few for from further had has have having he her here hers him his how i if in into
    is it its itself just me more most my no nor not of off on once only or other our
    ours out over own same she should so some such than that the their theirs them then
    there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself may
    must shall also any each every get got
    """.split()  # noqa: SIM905  (a word list reads better as text)
)


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence of a text: its words with whitespace collapsed, and its character span."""

    text: str
    start: int
    end: int


def _ends_sentence(text: str, punct_start: int, next_start: int) -> bool:
    if next_start >= len(text):
        return True
    following = text[next_start]
    if not (following.isupper() or following.isdigit() or following in _OPENERS):
        return False
    if text[punct_start] != ".":
        return True
    word_start = punct_start
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:punct_start].lstrip("\"'\u201c\u2018([")
    if len(word) == 1 and word.isupper():
        return False  # an initial, as in "J. Smith"
    return word.lower() not in _ABBREVIATIONS and not _DOTTED_ACRONYM.fullmatch(word)


def _units(text: str) -> list[tuple[int, int]]:
    """Spans of paragraphs, list items and headings; wrapped lines stay together."""
    spans: list[tuple[int, int]] = []
    paragraph_start = 0
    for paragraph in [*_PARAGRAPH_BREAK.finditer(text), None]:
        paragraph_end = paragraph.start() if paragraph else len(text)
        unit_start = paragraph_start
        offset = paragraph_start
        for line in text[paragraph_start:paragraph_end].split("\n"):
            if offset > unit_start and _NEW_UNIT_LINE.match(line):
                spans.append((unit_start, offset))
                unit_start = offset
            offset += len(line) + 1
        spans.append((unit_start, paragraph_end))
        if paragraph:
            paragraph_start = paragraph.end()
    return spans


def split_sentences(text: str) -> list[Sentence]:
    """The sentences of `text` in order, each with its span in `text`.

    A unit without any letter or digit (a rule line, a lone bullet) is dropped.
    """
    sentences: list[Sentence] = []
    for unit_start, unit_end in _units(text):
        piece_start = unit_start
        for match in _SENTENCE_END.finditer(text, unit_start, unit_end):
            # "4. Redistribution": a section number is not a sentence.
            numbering = text[piece_start : match.start()].strip().isdigit()
            if not numbering and _ends_sentence(text, match.start(), match.end()):
                _add(sentences, text, piece_start, match.end())
                piece_start = match.end()
        _add(sentences, text, piece_start, unit_end)
    return sentences


def _add(sentences: list[Sentence], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end and any(ch.isalnum() for ch in text[start:end]):
        sentences.append(Sentence(_SPACES.sub(" ", text[start:end]), start, end))


def content_words(text: str) -> frozenset[str]:
    """The words of `text` that carry meaning: lower-cased, stopwords out, light stemming.

    The stemming only folds plural and verb endings and a final "e" ("copies" ~ "copy",
    "included" ~ "include" ~ "includ"), enough for overlap between a question or an
    answer and its source without a stemmer dependency.
    """
    return frozenset(
        _stem(word)
        for word in (w.lower() for w in _WORD.findall(text))
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit())
    )


def _stem(word: str) -> str:
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    # "license", "licenses", "licensed" all become "licens".
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def overlap(words: frozenset[str], source: frozenset[str]) -> float:
    """Share of `words` found in `source` (0 when `words` is empty)."""
    if not words:
        return 0.0
    return len(words & source) / len(words)
