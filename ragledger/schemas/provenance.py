"""HTTP shapes of a question's provenance: the answer, the exact context, the events.

`ProvenancePublic` holds what the asker's view (`AnswerPublic`) and the auditor's
(`AuditAnswerStory`) share; each adds its own fields.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ContextPublic(BaseModel):
    """A context block exactly as the model saw it, rebuilt from the ledger."""

    n: int
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    version: int
    title: str | None = Field(description="None when withheld")
    heading_path: list[str]
    text: str | None = Field(description="None when withheld or not found in the ledger")
    text_sha256: str
    text_verified: bool
    vector_rank: int | None
    text_rank: int | None
    similarity: str | None
    fused_score: str
    chunked_at_position: int | None
    withheld: str | None = Field(
        default=None,
        description="Why title, headings and text are not shown to you now: "
        "`access_revoked` (you may no longer read the document) or `retracted`",
    )


class LedgerRef(BaseModel):
    """An event involved in the answer."""

    position: int
    event_type: str
    stream_id: str
    recorded_at: datetime
    hash: str


class ProvenancePublic(BaseModel):
    """What the ledger says about one question: its answer and the exact context."""

    # Built from the services' Provenance dataclass by attribute.
    model_config = ConfigDict(from_attributes=True)

    question_id: uuid.UUID
    question: str
    asked_by: uuid.UUID
    asked_at: datetime
    status: str = Field(description="pending, answered, no_context or failed")
    answer: str | None
    failure_reason: str | None
    model: str | None
    usage: dict[str, int]
    timings_ms: dict[str, int]
    citations: list[int]
    prompt_sha256: str | None
    prompt_verified: bool | None = Field(
        description="The prompt rebuilt from the ledger has the recorded hash."
    )
    removed_by_access_filter: int | None
    retrieval_settings: dict[str, str]
    context: list[ContextPublic]
    feedback: list[dict[str, object]]
