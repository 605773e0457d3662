"""HTTP shapes of documents."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    access_groups: list[str] = Field(description="Groups whose members may read it.")
    public: bool = Field(
        description="Every signed-in user may read it. Not public and no groups: "
        "admins and auditors only."
    )
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
    """New readers for a document: its groups, whether it is public, or both."""

    model_config = ConfigDict(extra="forbid")

    access_groups: list[GroupName] | None = Field(
        default=None, max_length=100, description="Omit to keep; empty: no group"
    )
    public: bool | None = Field(default=None, description="Omit to keep")

    @model_validator(mode="after")
    def _something_changes(self) -> DocumentAccessUpdate:
        if self.access_groups is None and self.public is None:
            raise ValueError("give access_groups, public, or both")
        return self


class DocumentAccessPublic(BaseModel):
    """The document's readers after a change."""

    document_id: uuid.UUID
    access_groups: list[str]
    public: bool
