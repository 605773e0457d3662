"""Uploaded bytes to cleaned text with sections: content sniffing, parsing, cleaning.

Everything here is a pure function of the bytes it is given. The content type is
decided by `sniff_content_type` from the bytes alone (never a filename or a client's
header); `extract_text` then parses the bytes as that type, cleans the text, and
splits it into sections that tile it, each under the path of headings that encloses it.

Failures are `ExtractionError`s whose message is the reason shown to users when an
ingestion fails; `UnsupportedContentTypeError` is the refusal of a type (HTTP 415).

One module per seam: `sniffing` (and `decoding`, `zip_guard` for ZIP containers),
one parser per format (`pdf_text`, `docx_text`, `html_text`, `markdown_text`),
`cleaning` (shared by every parser) and `dispatch`. `worker` runs `extract_text` in
a standing child process (`child`, frames in `protocol`) under a time and a memory
limit; `isolated` does it once in a fresh child.
"""

from ragledger.services.extraction.cleaning import clean_text
from ragledger.services.extraction.content_types import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DOCX_CONTENT_TYPE,
    FORMAT_NAMES,
    HTML_CONTENT_TYPE,
    MARKDOWN_CONTENT_TYPE,
    MAX_HEADING_CHARS,
    PDF_CONTENT_TYPE,
    PLAIN_TEXT_CONTENT_TYPE,
    SUPPORTED_CONTENT_TYPES,
)
from ragledger.services.extraction.dispatch import extract_text
from ragledger.services.extraction.errors import ExtractionError, UnsupportedContentTypeError
from ragledger.services.extraction.sniffing import sniff_content_type

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DOCX_CONTENT_TYPE",
    "FORMAT_NAMES",
    "HTML_CONTENT_TYPE",
    "MARKDOWN_CONTENT_TYPE",
    "MAX_HEADING_CHARS",
    "PDF_CONTENT_TYPE",
    "PLAIN_TEXT_CONTENT_TYPE",
    "SUPPORTED_CONTENT_TYPES",
    "ExtractionError",
    "UnsupportedContentTypeError",
    "clean_text",
    "extract_text",
    "sniff_content_type",
]
