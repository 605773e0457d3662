"""HTML to text with the standard library's parser: blocks, headings, no scripts."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction.cleaning import SectionBuilder
from ragledger.services.extraction.content_types import HTML_CONTENT_TYPE
from ragledger.services.extraction.decoding import decode_html

# fmt: off
_HTML_SKIPPED = frozenset({
    "script", "style", "head", "noscript", "template", "title", "svg", "math", "iframe",
    "object", "select",
})
_HTML_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "header", "hgroup", "hr", "html", "legend", "li", "main", "nav", "ol", "p", "pre",
    "section", "summary", "table", "ul",
})
# fmt: on
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# HTML collapses ASCII whitespace only; a no-break space is content.
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_SPACES = re.compile(r" {2,}")


class _HtmlTextParser(HTMLParser):
    """Feeds visible text, as blocks and headings, into a section builder."""

    def __init__(self, builder: SectionBuilder) -> None:
        super().__init__(convert_charrefs=True)
        self._builder = builder
        self._skip: list[str] = []
        self._buffer: list[str] = []
        self._heading: int | None = None
        self._pre = 0
        self._table = 0
        self._cells = 0
        self._lists: list[list[Any]] = []
        self._prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIPPED:
            self._skip.append(tag)
            return
        if self._skip:
            # A body or body content after an unclosed <head> ends the head, as in
            # browsers; inside any other skipped element the tag is invisible.
            if "head" in self._skip and (tag in _HTML_BLOCKS or tag in _HTML_HEADINGS):
                del self._skip[self._skip.index("head") :]
            else:
                return
        if tag == "br":
            self._buffer.append(" " if self._heading is not None else "\n")
        elif tag in ("td", "th"):
            if self._cells:
                self._buffer.append(" | ")
            self._cells += 1
        elif tag == "tr":
            self._end_row()
        elif self._table:
            if tag == "table":
                self._table += 1
            elif tag in _HTML_BLOCKS or tag in _HTML_HEADINGS:
                self._buffer.append(" ")
        elif tag in _HTML_HEADINGS:
            self._flush()
            self._heading = _HTML_HEADINGS[tag]
        elif tag in _HTML_BLOCKS:
            self._flush()
            self._open_block(tag)

    def _open_block(self, tag: str) -> None:
        if tag == "table":
            self._table = 1
            self._cells = 0
        elif tag == "pre":
            self._pre += 1
        elif tag in ("ul", "ol"):
            self._lists.append([tag, 0])
        elif tag == "li":
            if self._lists and self._lists[-1][0] == "ol":
                self._lists[-1][1] += 1
                self._prefix = f"{self._lists[-1][1]}. "
            else:
                self._prefix = "- "

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                del self._skip[len(self._skip) - 1 - self._skip[::-1].index(tag) :]
            return
        if tag == "tr":
            self._end_row()
        elif self._table:
            if tag == "table":
                self._table -= 1
                if not self._table:
                    self._flush()
        elif tag in _HTML_HEADINGS or tag in _HTML_BLOCKS:
            self._flush()
            if tag == "pre" and self._pre:
                self._pre -= 1
            elif tag in ("ul", "ol") and self._lists:
                self._lists.pop()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._buffer.append(data if self._pre else _HTML_SPACE.sub(" ", data))

    def _end_row(self) -> None:
        if self._cells:
            self._buffer.append("\n")
        self._cells = 0

    def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer.clear()
        if self._heading is not None:
            self._builder.heading(self._heading, text)
            self._heading = None
            return
        if not self._pre:
            text = "\n".join(_SPACES.sub(" ", line).strip(" ") for line in text.split("\n"))
        if text.strip():
            # The list marker waits for the item's first text: <li><p>...</p></li>
            # flushes an empty block at <p>, and the marker belongs to the paragraph.
            self._builder.paragraph(self._prefix + text)
            self._prefix = ""

    def close(self) -> None:
        super().close()
        self._flush()


def extract_html(data: bytes, *, max_chars: int) -> ExtractedText:
    """The visible text of an HTML page, in sections under its h1-h6 headings."""
    builder = SectionBuilder(max_chars)
    parser = _HtmlTextParser(builder)
    parser.feed(decode_html(data))
    parser.close()
    return builder.build(HTML_CONTENT_TYPE)
