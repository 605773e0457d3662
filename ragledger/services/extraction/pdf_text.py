"""PDF to text with pypdf: one section per outline heading, refusing encrypted files."""

from __future__ import annotations

import io
import struct
import zlib

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction.cleaning import SectionBuilder, describe, no_text
from ragledger.services.extraction.content_types import PDF_CONTENT_TYPE
from ragledger.services.extraction.errors import ExtractionError

# pypdf reports malformed input through many exception types, not only its own.
_PDF_ERRORS = (
    PyPdfError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    AssertionError,
    ArithmeticError,
    RecursionError,
    OSError,
    struct.error,
    zlib.error,
)


def extract_pdf(data: bytes, *, max_chars: int) -> ExtractedText:
    """The text of a PDF, a section per page; ExtractionError for a damaged or encrypted one."""
    # A file cut short in transit has no end marker; pypdf would otherwise rebuild what
    # it can and quietly return part of the document.
    if b"%%EOF" not in data:
        raise ExtractionError("the PDF is corrupt or unreadable: the file is truncated")
    builder = SectionBuilder(max_chars)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            # Owner-password-only PDFs (printing or copying "restricted") open with the
            # empty user password, as in every viewer, and are extracted; a real user
            # password is a refusal.
            raise ExtractionError("the PDF is encrypted")
        pages = reader.pages
        page_count = len(pages)
        for number, page in enumerate(pages, start=1):
            builder.paragraph(page.extract_text(), path=(f"Page {number}",))
    except ExtractionError:
        raise
    except FileNotDecryptedError as exc:
        raise ExtractionError("the PDF is encrypted") from exc
    except DependencyError as exc:
        raise ExtractionError("the PDF is encrypted with an unsupported method") from exc
    except _PDF_ERRORS as exc:
        raise ExtractionError(f"the PDF is corrupt or unreadable: {describe(exc)}") from exc
    if builder.empty:
        raise no_text(" (scanned pages need OCR, which is not supported)")
    return builder.build(PDF_CONTENT_TYPE, page_count=page_count)
