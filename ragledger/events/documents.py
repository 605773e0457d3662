"""Document events: uploads, extraction, chunking, embedding, indexing, retraction, access.

A document is the stream `document-<id>`; each upload is a new version of it. Chunk
texts and vectors travel in the events, so the chunks projection can be rebuilt from
the ledger without extracting or embedding anything again.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ragledger.events.registry import event_type


def document_stream(document_id: UUID) -> str:
    """The stream of one document."""
    return f"document-{document_id}"


@event_type
@dataclass(frozen=True, slots=True)
class DocumentUploaded:
    """A user uploaded a new version of a document (the bytes are in the blob table)."""

    document_id: UUID
    version: int
    title: str
    filename: str
    original_filename: str
    blob_sha256: str
    size: int
    content_type: str
    access_groups: tuple[str, ...]
    uploaded_by: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class DocumentTextExtracted:
    """Text was extracted from a version; the text itself is re-derivable from the blob."""

    document_id: UUID
    version: int
    content_type: str
    char_count: int
    text_sha256: str
    section_count: int
    page_count: int | None


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One chunk as recorded: where it is in the text and what it says."""

    chunk_id: UUID
    index: int
    text: str
    text_sha256: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    token_count: int


@event_type
@dataclass(frozen=True, slots=True)
class DocumentChunked:
    """A version's text was split into chunks (sizes in model tokens)."""

    document_id: UUID
    version: int
    max_tokens: int
    overlap_tokens: int
    chunks: tuple[ChunkRecord, ...]


@event_type
@dataclass(frozen=True, slots=True)
class ChunksEmbedded:
    """Vectors for some of a version's chunks: base64 of little-endian float32, in order."""

    document_id: UUID
    version: int
    model: str
    model_sha256: str
    dimensions: int
    chunk_ids: tuple[UUID, ...]
    vectors: tuple[str, ...]


@event_type
@dataclass(frozen=True, slots=True)
class DocumentIndexed:
    """A version is fully searchable; earlier versions stop being retrieved."""

    document_id: UUID
    version: int
    chunk_count: int


@event_type
@dataclass(frozen=True, slots=True)
class DocumentIngestionFailed:
    """A version could not be ingested; none of it is searchable."""

    document_id: UUID
    version: int
    stage: str
    reason: str


@event_type
@dataclass(frozen=True, slots=True)
class DocumentRetracted:
    """A document was withdrawn: no longer listed or retrieved, still in the ledger."""

    document_id: UUID
    retracted_by: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class DocumentAccessChanged:
    """The groups that may read a document changed (empty: everyone)."""

    document_id: UUID
    old_groups: tuple[str, ...]
    new_groups: tuple[str, ...]
    changed_by: UUID | None
