"""The document types extraction accepts, their names, and the default size limits."""

from __future__ import annotations

PDF_CONTENT_TYPE = "application/pdf"
DOCX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_CONTENT_TYPE = "text/html"
MARKDOWN_CONTENT_TYPE = "text/markdown"
PLAIN_TEXT_CONTENT_TYPE = "text/plain"
SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        PDF_CONTENT_TYPE,
        DOCX_CONTENT_TYPE,
        HTML_CONTENT_TYPE,
        MARKDOWN_CONTENT_TYPE,
        PLAIN_TEXT_CONTENT_TYPE,
    }
)
FORMAT_NAMES: dict[str, str] = {
    PDF_CONTENT_TYPE: "PDF",
    DOCX_CONTENT_TYPE: "DOCX",
    HTML_CONTENT_TYPE: "HTML",
    MARKDOWN_CONTENT_TYPE: "Markdown",
    PLAIN_TEXT_CONTENT_TYPE: "plain text",
}

# Far above any real policy document (a 1,000-page Word file is a few MiB of XML),
# far below what would hurt a worker: the budget for a whole DOCX once inflated.
DEFAULT_MAX_DECOMPRESSED_BYTES = 200 * 2**20
# About 10,000 pages of dense text; beyond that an upload is almost surely not a policy.
DEFAULT_MAX_CHARS = 20_000_000
MAX_HEADING_CHARS = 200

ACCEPTED = "accepted types: PDF, DOCX, HTML, Markdown and plain text"
