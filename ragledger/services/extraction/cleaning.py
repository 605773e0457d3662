"""Text cleaning, headings, the shared failure messages and the section builder.

Every format's parser feeds a `SectionBuilder`, which cleans what it is given and
returns sections that tile the cleaned text.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile

from ragledger.services.document_text import ExtractedText, Section
from ragledger.services.extraction.content_types import MAX_HEADING_CHARS
from ragledger.services.extraction.errors import ExtractionError

# Vertical tab, form feed, NEL and the Unicode line/paragraph separators end lines in
# the sources they come from (form feeds separate pages in text dumps); keep the break.
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0 and C1 controls (besides \t and \n), DEL, lone surrogates (unencodable in UTF-8,
# so PostgreSQL would refuse them) and stray byte-order marks.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufeff]")
_BLANK_LINE_RUNS = re.compile(r"\n{4,}")


def clean_text(text: str) -> str:
    """Normalise text for storage and search; idempotent.

    Line breaks become ``\\n``; NUL and every other control character except ``\\n``
    and ``\\t`` are removed; the text is put in Unicode NFC; trailing whitespace is
    stripped from each line; runs of three or more blank lines become two; and blank
    lines at the start and end are dropped.
    """
    text = _LINE_BREAKS.sub("\n", text)
    # Controls go before NFC: removing one between a letter and a combining mark would
    # otherwise leave a sequence that a second pass composes (not idempotent).
    text = _CONTROLS.sub("", text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    # Line by line, not with a regex anchored at `$`: that backtracks quadratically on
    # long runs of spaces that do not end a line.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_LINE_RUNS.sub("\n\n\n", text)
    return text.strip("\n")


def clean_heading(raw: str) -> str:
    """A heading as one cleaned line of at most MAX_HEADING_CHARS characters."""
    # Headings are single-line labels: the cap applies before cleaning too, so a
    # megabyte-long "heading" costs nothing.
    heading = " ".join(clean_text(raw[: MAX_HEADING_CHARS * 4]).split())
    return heading[:MAX_HEADING_CHARS].rstrip()


def format_bytes(n: int) -> str:
    """A byte count for a message: whole MiB or KiB where exact, else bytes."""
    if n >= 2**20 and n % 2**20 == 0:
        return f"{n // 2**20} MiB"
    if n >= 2**10 and n % 2**10 == 0:
        return f"{n // 2**10} KiB"
    return f"{n:,} bytes"


def describe(exc: BaseException) -> str:
    """A parser's exception as one short line a user can read (at most 200 characters)."""
    if isinstance(exc, zipfile.BadZipFile) and str(exc) == "File is not a zip file":
        return "not a readable ZIP archive (truncated or damaged)"
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    lines = str(message).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text[:200]


def too_long(max_chars: int) -> ExtractionError:
    """The error for a document whose text exceeds max_chars."""
    return ExtractionError(f"the document's text is longer than {max_chars:,} characters")


def no_text(hint: str = "") -> ExtractionError:
    """The error for a document with no text, with an optional hint of why."""
    return ExtractionError("the document contains no text" + hint)


class SectionBuilder:
    """Collects cleaned blocks under heading paths and assembles tiling sections."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._length = 0
        self._stack: list[tuple[int, str]] = []
        self._sections: list[tuple[tuple[str, ...], list[str]]] = []

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)

    @property
    def empty(self) -> bool:
        return not self._sections

    def heading(self, level: int, raw: str) -> None:
        title = clean_heading(raw)
        if not title:
            return
        # Pop every heading at this level or deeper: an h2 after an h3 closes both.
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._append(title, self.path, new_section=True)

    def paragraph(self, raw: str, *, path: tuple[str, ...] | None = None) -> None:
        text = clean_text(raw)
        if not text.strip():
            return
        self._append(text, self.path if path is None else path, new_section=False)

    def _append(self, text: str, path: tuple[str, ...], *, new_section: bool) -> None:
        # Blocks are joined by one blank line; count it now so a huge document fails
        # as soon as it passes the limit, not after all of it is held in memory.
        self._length += len(text) + 2
        if self._length - 2 > self._max_chars:
            raise too_long(self._max_chars)
        if new_section or not self._sections or self._sections[-1][0] != path:
            self._sections.append((path, [text]))
        else:
            self._sections[-1][1].append(text)

    def build(self, content_type: str, *, page_count: int | None = None) -> ExtractedText:
        if not self._sections:
            raise no_text()
        sections: list[Section] = []
        offset = 0
        last = len(self._sections) - 1
        for index, (path, blocks) in enumerate(self._sections):
            body = "\n\n".join(blocks)
            if index < last:
                body += "\n\n"
            sections.append(Section(heading_path=path, text=body, start=offset))
            offset += len(body)
        text = "".join(section.text for section in sections)
        return ExtractedText(
            content_type=content_type,
            text=text,
            sections=tuple(sections),
            page_count=page_count,
        )
