"""HTTP shapes of refusals: every 4xx answer is `{"detail": ...}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorPublic(BaseModel):
    """A refusal, with a sentence saying why."""

    detail: str


class ValidationIssue(BaseModel):
    """One problem pydantic found in the request, as FastAPI reports it."""

    type: str
    loc: list[str | int] = Field(description='Where: ["body", "question"], ["query", "top_k"]')
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorPublic(BaseModel):
    """Invalid input: pydantic's list of problems, or a sentence when the content was
    refused after parsing (a password too short, text the ledger cannot store)."""

    detail: list[ValidationIssue] | str
