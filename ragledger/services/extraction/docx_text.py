"""DOCX to text with python-docx: paragraphs and tables in order, headings by style."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import docx
from docx.enum.style import WD_STYLE_TYPE
from docx.exceptions import PythonDocxError
from docx.opc.exceptions import OpcError
from lxml import etree

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction.cleaning import SectionBuilder, describe
from ragledger.services.extraction.content_types import DOCX_CONTENT_TYPE
from ragledger.services.extraction.errors import ExtractionError
from ragledger.services.extraction.zip_guard import check_docx_archive

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_W_P, _W_TBL, _W_TR, _W_TC = f"{_W}p", f"{_W}tbl", f"{_W}tr", f"{_W}tc"
_W_SDT, _W_SDT_CONTENT, _W_CUSTOM_XML = f"{_W}sdt", f"{_W}sdtContent", f"{_W}customXml"
_W_T, _W_TAB, _W_PTAB, _W_BR, _W_CR = f"{_W}t", f"{_W}tab", f"{_W}ptab", f"{_W}br", f"{_W}cr"
_W_NO_BREAK_HYPHEN = f"{_W}noBreakHyphen"
# Deleted revisions, the source of moved text, and the legacy copy that Word writes
# next to each text box (mc:Fallback) would all duplicate or resurrect text.
_DOCX_SKIPPED = frozenset({f"{_W}del", f"{_W}moveFrom", _MC_FALLBACK, f"{_W}pPr", f"{_W}rPr"})
_HEADING_STYLE = re.compile(r"heading ([1-9])")
# python-docx and lxml report broken packages and XML through these.
_DOCX_ERRORS = (
    OpcError,
    PythonDocxError,
    etree.LxmlError,
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    OSError,
    zlib.error,
)


def extract_docx(data: bytes, *, max_decompressed_bytes: int, max_chars: int) -> ExtractedText:
    """The text of a DOCX under its headings, after the archive passed the zip guard."""
    check_docx_archive(data, max_decompressed_bytes)
    builder = SectionBuilder(max_chars)
    try:
        document = docx.Document(io.BytesIO(data))
        levels = _DocxHeadingLevels(document)
        body = document.element.body
        for block in _docx_blocks(body) if body is not None else ():
            if block.tag == _W_TBL:
                builder.paragraph(_docx_table_text(block))
                continue
            text = _docx_paragraph_text(block)
            level = levels.of(block)
            if level is None:
                builder.paragraph(text)
            else:
                builder.heading(level, text)
    except ExtractionError:
        raise
    except _DOCX_ERRORS as exc:
        raise ExtractionError(f"the DOCX is corrupt: {describe(exc)}") from exc
    return builder.build(DOCX_CONTENT_TYPE)


class _DocxHeadingLevels:
    """Heading levels from paragraph styles: Title is 0, Heading N is N, else outline level."""

    def __init__(self, document: Any) -> None:
        self._part = document.part
        self._by_style: dict[str | None, int | None] = {}

    def of(self, paragraph: Any) -> int | None:
        # Direct formatting wins over the style, as in Word's navigation pane.
        direct = paragraph.xpath("./w:pPr/w:outlineLvl/@w:val")
        if direct:
            return _outline_level(direct[0])
        style_id = paragraph.style
        if style_id not in self._by_style:
            self._by_style[style_id] = self._style_level(style_id)
        return self._by_style[style_id]

    def _style_level(self, style_id: str | None) -> int | None:
        style = self._part.get_style(style_id, WD_STYLE_TYPE.PARAGRAPH)
        # Custom styles often derive from a built-in heading; a short walk up the
        # base-style chain finds it (and stops on a cycle in a malformed file).
        for _ in range(10):
            if style is None:
                return None
            name = (style.name or "").strip().lower()
            if name == "title":
                return 0
            match = _HEADING_STYLE.fullmatch(name)
            if match:
                return int(match.group(1))
            outline = style.element.xpath("./w:pPr/w:outlineLvl/@w:val")
            if outline:
                return _outline_level(outline[0])
            style = style.base_style
        return None


def _outline_level(value: str) -> int | None:
    # Outline levels 0-8 are heading levels 1-9; 9 means body text.
    try:
        level = int(value)
    except ValueError:
        return None
    return level + 1 if 0 <= level <= 8 else None


def _docx_blocks(container: Any) -> Iterator[Any]:
    """Paragraphs and tables in reading order, looking inside content controls."""
    for child in container.iterchildren():
        if child.tag in (_W_P, _W_TBL):
            yield child
        elif child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _docx_blocks(content)
        elif child.tag == _W_CUSTOM_XML:
            yield from _docx_blocks(child)


def _docx_paragraph_text(paragraph: Any) -> str:
    parts: list[str] = []
    _docx_collect_text(paragraph, parts)
    return "".join(parts)


def _docx_collect_text(element: Any, parts: list[str]) -> None:
    for child in element.iterchildren():
        tag = child.tag
        if not isinstance(tag, str) or tag in _DOCX_SKIPPED:
            continue
        if tag == _W_T:
            parts.append(child.text or "")
        elif tag in (_W_TAB, _W_PTAB):
            parts.append("\t")
        elif tag in (_W_BR, _W_CR):
            parts.append("\n")
        elif tag == _W_NO_BREAK_HYPHEN:
            parts.append("-")
        elif tag == _W_P:
            # A paragraph inside a text box: keep it on its own line.
            parts.append("\n")
            _docx_collect_text(child, parts)
            parts.append("\n")
        else:
            _docx_collect_text(child, parts)


def _docx_table_text(table: Any) -> str:
    rows: list[str] = []
    for row in table.iterchildren(_W_TR):
        cells = [_docx_cell_text(cell) for cell in _docx_cells(row)]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _docx_cells(row: Any) -> Iterator[Any]:
    for child in row.iterchildren():
        if child.tag == _W_TC:
            yield child
        elif child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _docx_cells(content)


def _docx_cell_text(cell: Any) -> str:
    parts: list[str] = []
    for block in _docx_blocks(cell):
        text = _docx_table_text(block) if block.tag == _W_TBL else _docx_paragraph_text(block)
        text = " ".join(text.split())
        if text:
            parts.append(text)
    return " ".join(parts)
