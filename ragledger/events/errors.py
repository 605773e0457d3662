"""Typed errors of the ledger; the API maps each to a status code."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every ledger error."""


class WrongExpectedVersionError(LedgerError):
    """Optimistic concurrency: the stream moved on since the caller read it (HTTP 409)."""

    def __init__(self, stream_id: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
