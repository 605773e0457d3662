"""The audit filters' checks: ranges, NUL and sizes, times in UTC, the fingerprint."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ragledger.services.audit.filters import AnswerFilters, EventFilters, InvalidFilterError


def test_reversed_ranges_are_refused() -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidFilterError, match="time range is reversed"):
        EventFilters.build(recorded_from=now, recorded_to=now - timedelta(seconds=1))
    with pytest.raises(InvalidFilterError, match="position range is reversed"):
        EventFilters.build(from_position=10, to_position=9)
    with pytest.raises(InvalidFilterError, match="time range is reversed"):
        AnswerFilters.build(asked_from=now, asked_to=now - timedelta(days=1))
    # Equal bounds are an empty range, not a reversed one.
    EventFilters.build(recorded_from=now, recorded_to=now, from_position=3, to_position=3)


def test_filter_values_with_nul_or_too_many_types_are_refused() -> None:
    with pytest.raises(InvalidFilterError, match="NUL"):
        EventFilters.build(actor="a\x00b")
    with pytest.raises(InvalidFilterError, match="event types"):
        EventFilters.build(event_types=[f"T{i}" for i in range(51)])
    with pytest.raises(InvalidFilterError, match="at most"):
        EventFilters.build(stream="s" * 301)


def test_times_are_normalised_to_utc_and_the_fingerprint_follows_the_query() -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    aware = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    a = EventFilters.build(recorded_from=naive)
    b = EventFilters.build(recorded_from=aware)
    assert a.recorded_from == b.recorded_from == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert a.fingerprint("newest") == b.fingerprint("newest")
    assert a.fingerprint("newest") != a.fingerprint("oldest")
    # Repeated event types in any order are the same query.
    assert (
        EventFilters.build(event_types=["B", "A", "A"]).fingerprint("newest")
        == EventFilters.build(event_types=["A", "B"]).fingerprint("newest")
        != EventFilters.build(event_types=["A"]).fingerprint("newest")
    )
    document = uuid.uuid4()
    assert EventFilters.build(document_id=document).record() == {"document": (str(document),)}
