"""The event pages' size: clamped into 1..MAX_PAGE_SIZE."""

from __future__ import annotations

import pytest

from ragledger.core.paging import MAX_PAGE_SIZE
from ragledger.services.audit.event_pages import clamp_size


@pytest.mark.parametrize(
    ("asked", "clamped"),
    [(-5, 1), (0, 1), (1, 1), (50, 50), (MAX_PAGE_SIZE, MAX_PAGE_SIZE), (10**12, MAX_PAGE_SIZE)],
)
def test_page_size_is_clamped(asked: int, clamped: int) -> None:
    assert clamp_size(asked) == clamped
