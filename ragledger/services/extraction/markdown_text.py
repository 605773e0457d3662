"""Markdown and plain text: ATX and setext headings outside fenced code."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ragledger.services.document_text import ExtractedText, Section
from ragledger.services.extraction.cleaning import clean_heading, clean_text, no_text, too_long
from ragledger.services.extraction.content_types import (
    MARKDOWN_CONTENT_TYPE,
    MAX_HEADING_CHARS,
    PLAIN_TEXT_CONTENT_TYPE,
)
from ragledger.services.extraction.decoding import decode_text

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t](.*))?")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_NOT_PARAGRAPH = re.compile(r" {4}|\t| {0,3}(?:[-+*>]|\d{1,9}[.)])(?:[ \t]|$)| {0,3}#")
MD_LINK = re.compile(r"!?\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)")
_MD_MARKS = re.compile(r"\*\*|__|`")


def markdown_headings(text: str) -> Iterator[tuple[int, int, str]]:
    """(offset of the heading's first line, level, title) for each ATX or setext heading.

    Lines inside fenced code blocks are never headings. A setext underline (``===`` or
    ``---``) makes a heading only of a one-line paragraph that follows a blank line (or
    starts the text): multi-line setext headings are rare, and the narrow rule keeps a
    ``---`` rule or YAML front matter from turning prose into headings.
    """
    fence: str | None = None
    candidate: tuple[int, str] | None = None  # a one-line paragraph an underline would promote
    after_blank = True
    offset = 0
    for line in text.split("\n"):
        start, offset = offset, offset + len(line) + 1
        fence_match = _FENCE.fullmatch(line)
        if fence is not None:
            # A fence closes with the same character, at least as long, nothing after.
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
                and not fence_match.group(2).strip()
            ):
                fence = None
            candidate, after_blank = None, False
            continue
        if fence_match and not (fence_match.group(1)[0] == "`" and "`" in fence_match.group(2)):
            fence = fence_match.group(1)
            candidate, after_blank = None, False
            continue
        atx = _ATX.fullmatch(line)
        if atx:
            title = _atx_title(atx.group(2) or "")
            if title:
                yield start, len(atx.group(1)), title
            candidate, after_blank = None, False
            continue
        setext = _SETEXT.fullmatch(line)
        if setext and candidate is not None:
            title = _markdown_title(candidate[1])
            if title:
                yield candidate[0], 1 if setext.group(1)[0] == "=" else 2, title
                candidate, after_blank = None, False
                continue
        blank = not line.strip()
        promotable = after_blank and not blank and not _NOT_PARAGRAPH.match(line)
        candidate = (start, line) if promotable else None
        after_blank = blank


def _atx_title(raw: str) -> str:
    # The optional closing run of #s, done by hand: a regex for it backtracks
    # quadratically on a long run of #s.
    stripped = raw.rstrip()
    without = stripped.rstrip("#")
    if not without:
        return ""
    if without != stripped and without[-1] in " \t":
        stripped = without
    return _markdown_title(stripped)


def _markdown_title(raw: str) -> str:
    title = MD_LINK.sub(r"\1", raw[: MAX_HEADING_CHARS * 4])
    title = _MD_MARKS.sub("", title).strip()
    if len(title) > 2 and title[0] == title[-1] and title[0] in "*_":
        title = title[1:-1]
    return clean_heading(title)


def extract_markdown(data: bytes, *, max_chars: int) -> ExtractedText:
    """Markdown text split into sections at its ATX and setext headings."""
    text = _checked_text(data, max_chars)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    start = 0
    for offset, level, title in markdown_headings(text):
        if offset > start:
            path = tuple(name for _, name in stack)
            sections.append(Section(heading_path=path, text=text[start:offset], start=start))
            start = offset
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
    path = tuple(name for _, name in stack)
    sections.append(Section(heading_path=path, text=text[start:], start=start))
    return ExtractedText(content_type=MARKDOWN_CONTENT_TYPE, text=text, sections=tuple(sections))


def extract_plain(data: bytes, *, max_chars: int) -> ExtractedText:
    """Plain text as one section without a heading."""
    text = _checked_text(data, max_chars)
    section = Section(heading_path=(), text=text, start=0)
    return ExtractedText(content_type=PLAIN_TEXT_CONTENT_TYPE, text=text, sections=(section,))


def _checked_text(data: bytes, max_chars: int) -> str:
    text = clean_text(decode_text(data))
    if not text.strip():
        raise no_text()
    if len(text) > max_chars:
        raise too_long(max_chars)
    return text
