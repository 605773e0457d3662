"""The content type of a document decided from its bytes alone (magic, ZIP, text)."""

from __future__ import annotations

import codecs
import re

from ragledger.services.extraction.cleaning import clean_text
from ragledger.services.extraction.content_types import (
    HTML_CONTENT_TYPE,
    MARKDOWN_CONTENT_TYPE,
    PDF_CONTENT_TYPE,
    PLAIN_TEXT_CONTENT_TYPE,
)
from ragledger.services.extraction.decoding import SNIFF_BYTES, decode_text
from ragledger.services.extraction.errors import ExtractionError, unsupported
from ragledger.services.extraction.markdown_text import MD_LINK, markdown_headings
from ragledger.services.extraction.zip_guard import sniff_zip

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\xcf\xfa\xed\xfe", "an executable (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "an executable (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "an executable or Java class file"),
    (b"\x00asm", "a WebAssembly module"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Microsoft Office file (.doc, .xls, .ppt) or a password-protected Office document",
    ),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"OggS", "an Ogg media file"),
    (b"fLaC", "a FLAC audio file"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
)
# Prefixes that real text may also start with: named only when the rest is binary.
_WEAK_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows executable"),
    (b"ID3", "an MP3 audio file"),
    (b"BM", "a BMP image"),
)
_RIFF_KINDS = {b"WEBP": "a WebP image", b"WAVE": "a WAV audio file", b"AVI ": "an AVI video"}


def sniff_content_type(data: bytes) -> str:
    """Decide a document's content type from its bytes alone.

    Returns one of `SUPPORTED_CONTENT_TYPES`. Raises `ExtractionError` for empty input
    and `UnsupportedContentTypeError`, naming what was found when it can, for anything
    else (images, executables, archives, other office formats, binary data).
    """
    if not data:
        raise ExtractionError("the document is empty")
    if _is_pdf(data):
        return PDF_CONTENT_TYPE
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return sniff_zip(data)
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise unsupported(what)
    if data.startswith(b"RIFF") and data[8:12] in _RIFF_KINDS:
        raise unsupported(_RIFF_KINDS[data[8:12]])
    if data[4:8] == b"ftyp":
        raise unsupported("an MP4/QuickTime media file")

    sample = decode_text(data[:SNIFF_BYTES])
    verdict = _binary_verdict(sample)
    if verdict is not None:
        for magic, what in _WEAK_MAGIC:
            if data.startswith(magic):
                raise unsupported(what)
        raise unsupported(verdict)
    return _classify_text(sample)


def _is_pdf(data: bytes) -> bool:
    # PDF readers accept the header anywhere in the first 1,024 bytes; allow only
    # whitespace, NULs and byte-order marks before it, so a text that merely quotes
    # "%PDF-" near its start stays text.
    index = data.find(b"%PDF-", 0, 1024)
    if index < 0:
        return False
    prefix = data[:index]
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        prefix = prefix.replace(bom, b"")
    return not prefix.strip(b" \t\r\n\x0c\x00")


def _binary_verdict(sample: str) -> str | None:
    """Why a decoded sample is not text, or None when it is text."""
    if not sample:
        return None
    controls = sum(
        1 for ch in sample if (ch < " " and ch not in "\t\n\r\x0c\x0b\x1b") or ch == "\x7f"
    )
    if controls > 3 and controls * 100 > len(sample):
        return "binary data"
    invalid = sample.count("\ufffd")
    if invalid > 3 and invalid * 20 > len(sample):
        return "binary data or text in an encoding other than UTF-8 or UTF-16 (save it as UTF-8)"
    return None


_HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]{0,500}>\s*)?(?:<!--.{0,2000}?-->\s*)*"
    r"(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])",
    re.I | re.S,
)
_HTML_TAG = re.compile(
    r"</?(?:a|article|b|blockquote|body|br|code|div|em|footer|form|h[1-6]|head|header|hr|i|"
    r"img|input|li|link|main|meta|nav|ol|p|pre|script|section|span|strong|style|table|"
    r"td|th|title|tr|ul)(?=[\s/>])",
    re.I,
)
_MD_TABLE_RULE = re.compile(r"^ {0,3}\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M)
_MD_FENCE_BLOCK = re.compile(r"^ {0,3}(```|~~~)[^\n]*\n.*?^ {0,3}\1", re.M | re.S)


def _classify_text(sample: str) -> str:
    head = sample[:8192]
    if _HTML_START.match(head):
        return HTML_CONTENT_TYPE
    stripped = head.lstrip()
    lowered = stripped[:4096].lower()
    if lowered.startswith(("<?xml", "<svg")) and "<svg" in lowered:
        raise unsupported("an SVG image")
    if _looks_like_markdown(clean_text(sample)):
        return MARKDOWN_CONTENT_TYPE
    tags = len(_HTML_TAG.findall(head))
    if (stripped.startswith("<") and tags >= 3) or tags >= 10:
        return HTML_CONTENT_TYPE
    return PLAIN_TEXT_CONTENT_TYPE


def _looks_like_markdown(text: str) -> bool:
    """ATX or setext headings, a fenced code block, a table rule, or several links."""
    if next(markdown_headings(text), None) is not None:
        return True
    head = text[:16384]
    if _MD_TABLE_RULE.search(head) or _MD_FENCE_BLOCK.search(head):
        return True
    return len(MD_LINK.findall(head)) >= 2
