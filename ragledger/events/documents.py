"""Document events: uploads, extraction, chunking, embedding, indexing, retraction, access.

A document is the stream `document-<id>`; each upload is a new version of it. Chunk
texts and vectors travel in the events, so the chunks projection can be rebuilt from
the ledger without extracting or embedding anything again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ragledger.events.registry import event_type, registry


def document_stream(document_id: UUID) -> str:
    """The stream of one document."""
    return f"document-{document_id}"


@event_type(version=2)
@dataclass(frozen=True, slots=True)
class DocumentUploaded:
    """A user uploaded a new version of a document (the bytes are in the blob table).

    Readers: admins and auditors always; others when `public` or in `access_groups`.
    No groups and not public: admins and auditors only (fail closed). Schema v1 had no
    `public`: there, no groups meant everyone, and the upcaster keeps that meaning.
    """

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
    public: bool = False


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


@event_type(version=2)
@dataclass(frozen=True, slots=True)
class DocumentAccessChanged:
    """Who may read a document changed: its groups, or whether it is public.

    Schema v1 had no public flags: there, empty groups meant everyone (upcast so).
    """

    document_id: UUID
    old_groups: tuple[str, ...]
    new_groups: tuple[str, ...]
    changed_by: UUID | None
    old_public: bool = False
    new_public: bool = False


# Schema v1 of both events said "no groups: every employee may read it". The ledger is
# never rewritten, so old events are lifted on read with the public flag that meaning
# implies: a replay of an old ledger gives every document the readers it had then.
@registry.upcaster("DocumentUploaded", 1)
def _uploaded_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "public": not payload["access_groups"]}


@registry.upcaster("DocumentAccessChanged", 1)
def _access_changed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        **payload,
        "old_public": not payload["old_groups"],
        "new_public": not payload["new_groups"],
    }
