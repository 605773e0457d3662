"""Numbered paging shared by the console's lists."""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Pager:
    """Where a numbered page sits: its number and whether others come before or after."""

    page: int
    has_previous: bool
    has_next: bool


def page_number(value: int | None) -> int:
    """A page number from a query parameter, at least 1 and at most 100 000."""
    return max(1, min(value or 1, 100_000))
