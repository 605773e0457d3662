"""HTTP shapes of documents."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ragledger.schemas.users import GroupName


class DocumentAccepted(BaseModel):
    """An upload was stored and recorded; ingestion runs in the background."""

    document_id: uuid.UUID
    version: int
    status: str
    content_type: str
    blob_sha256: str


class DocumentPublic(BaseModel):
    """A document in the catalog (its current version)."""

    model_config = ConfigDict(from_attributes=True)

    document_id: uuid.UUID
    title: str
    filename: str
    content_type: str
    status: str = Field(description="pending, indexed, failed or retracted")
    failure_reason: str | None
    current_version: int
    indexed_version: int | None
    chunk_count: int
    access_groups: list[str] = Field(description="Empty: everyone may read it.")
    created_at: datetime
    updated_at: datetime


class DocumentVersionPublic(BaseModel):
    """One uploaded version."""

    model_config = ConfigDict(from_attributes=True)

    version: int
    title: str
    filename: str
    content_type: str
    size: int
    blob_sha256: str
    status: str
    failure_reason: str | None
    chunk_count: int
    char_count: int | None
    page_count: int | None
    uploaded_at: datetime
    indexed_at: datetime | None


class DocumentDetail(DocumentPublic):
    """A document with every version."""

    versions: list[DocumentVersionPublic]


class DocumentAccessUpdate(BaseModel):
    """New access groups for a document (empty: everyone)."""

    model_config = ConfigDict(extra="forbid")

    access_groups: list[GroupName] = Field(max_length=100)


class DocumentAccessPublic(BaseModel):
    """The document's groups after a change."""

    document_id: uuid.UUID
    access_groups: list[str]
