"""`extract_text`: parse bytes of a sniffed content type with that type's parser."""

from __future__ import annotations

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction.content_types import (
    ACCEPTED,
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DOCX_CONTENT_TYPE,
    HTML_CONTENT_TYPE,
    MARKDOWN_CONTENT_TYPE,
    PDF_CONTENT_TYPE,
    SUPPORTED_CONTENT_TYPES,
)
from ragledger.services.extraction.docx_text import extract_docx
from ragledger.services.extraction.errors import ExtractionError, UnsupportedContentTypeError
from ragledger.services.extraction.html_text import extract_html
from ragledger.services.extraction.markdown_text import extract_markdown, extract_plain
from ragledger.services.extraction.pdf_text import extract_pdf


def extract_text(
    data: bytes,
    content_type: str,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ExtractedText:
    """Parse `data` as `content_type` into cleaned text and sections that tile it.

    `content_type` should come from `sniff_content_type`. Raises
    `UnsupportedContentTypeError` for a type outside `SUPPORTED_CONTENT_TYPES` and
    `ExtractionError` when the document is empty, encrypted, corrupt, a zip bomb
    (more than `max_decompressed_bytes` inflated), has no text, or has more than
    `max_chars` characters of text.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in SUPPORTED_CONTENT_TYPES:
        raise UnsupportedContentTypeError(
            f"unsupported content type {content_type[:100]!r} ({ACCEPTED})"
        )
    if not data:
        raise ExtractionError("the document is empty")
    if kind == PDF_CONTENT_TYPE:
        return extract_pdf(data, max_chars=max_chars)
    if kind == DOCX_CONTENT_TYPE:
        return extract_docx(
            data, max_decompressed_bytes=max_decompressed_bytes, max_chars=max_chars
        )
    if kind == HTML_CONTENT_TYPE:
        return extract_html(data, max_chars=max_chars)
    if kind == MARKDOWN_CONTENT_TYPE:
        return extract_markdown(data, max_chars=max_chars)
    return extract_plain(data, max_chars=max_chars)
