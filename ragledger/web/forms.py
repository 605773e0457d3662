"""Parsing the console's query-string filters the way the API's parameters would."""

from __future__ import annotations

import uuid
from datetime import datetime

from ragledger.services.errors import InvalidInputError


def optional_uuid(value: str | None, what: str) -> uuid.UUID | None:
    """A UUID from a text field ('' is none); InvalidInputError naming the field."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidInputError(f"{what} must be an id like 0190c0de-…") from None


def optional_time(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 time from a text field ('' is none; no zone means UTC)."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"{what} must be a date and time like 2026-01-31T09:00") from None


def optional_int(value: str | None, what: str) -> int | None:
    """A whole number from a text field ('' is none)."""
    text = (value or "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise InvalidInputError(f"{what} must be a whole number")
    return int(text)
