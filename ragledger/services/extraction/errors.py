"""Extraction's failures: the reason users see, and the refusal of a type (HTTP 415)."""

from __future__ import annotations

from ragledger.services.errors import DomainError
from ragledger.services.extraction.content_types import ACCEPTED


class ExtractionError(DomainError):
    """The document's text could not be extracted; the message is the reason users see."""

    status_code = 422

    @property
    def reason(self) -> str:
        """The human-readable reason, as recorded on a failed ingestion."""
        return self.detail


class UnsupportedContentTypeError(ExtractionError):
    """The bytes are not one of the supported document types."""

    status_code = 415


def unsupported(what: str) -> UnsupportedContentTypeError:
    """The error for an upload of type `what`, naming the types that are accepted."""
    return UnsupportedContentTypeError(f"unsupported file type: {what} ({ACCEPTED})")
