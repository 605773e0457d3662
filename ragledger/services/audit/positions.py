"""Time ranges as position ranges, and how far a projection has read the ledger.

`recorded_at` is the database clock read under the append lock, so it never decreases
as positions grow: a time range is two index probes away from the position range it
covers, and the views page by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import false, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.models.ledger import SubscriberCheckpoint


@dataclass(frozen=True, slots=True)
class PositionRange:
    """Inclusive position bounds (None: open); `empty` when no position can match."""

    low: int | None = None
    high: int | None = None
    empty: bool = False

    def narrowed(self, low: int | None = None, high: int | None = None) -> PositionRange:
        """This range intersected with [low, high]."""
        new_low = self.low if low is None else low if self.low is None else max(self.low, low)
        new_high = (
            self.high if high is None else high if self.high is None else min(self.high, high)
        )
        empty = self.empty or (new_low is not None and new_high is not None and new_low > new_high)
        return PositionRange(new_low, new_high, empty)

    def conditions(self, column: Any) -> list[Any]:
        """The bounds as conditions on a position column."""
        if self.empty:
            return [false()]
        where: list[Any] = []
        if self.low is not None:
            where.append(column >= self.low)
        if self.high is not None:
            where.append(column <= self.high)
        return where


# The first event recorded at or after a moment. recorded_at is the database clock read
# under the append lock (clock_timestamp() after pg_advisory_xact_lock), so it never
# decreases as positions grow: the events of [from, to) are exactly the positions from
# the first event at or after `from` to the one before the first at or after `to`.
_FIRST_AT_OR_AFTER = (
    "(SELECT e.position FROM events AS e WHERE e.recorded_at >= CAST(:{name} AS timestamptz) "
    "ORDER BY e.recorded_at, e.position LIMIT 1)"
)


async def positions_for_times(
    session: AsyncSession, start: datetime | None, end: datetime | None
) -> PositionRange:
    """The position range of the events recorded in [start, end).

    Two probes of the recorded_at index; the ledger is then paged by position, which
    is what makes a time filter as cheap as a position filter. A moment after the head
    leaves that side open, so that events appended later still match.
    """
    return await _range_for_times(session, _FIRST_AT_OR_AFTER, start, end)


async def _range_for_times(
    session: AsyncSession, probe: str, start: datetime | None, end: datetime | None
) -> PositionRange:
    """[start, end) as a range of the positions that `probe` finds for each moment."""
    if start is None and end is None:
        return PositionRange()
    row = (
        await session.execute(
            text(
                "SELECT "
                + probe.format(name="start")
                + " AS low, "
                + probe.format(name="end")
                + " AS high"
            ),
            {"start": start, "end": end},
        )
    ).one()
    bounds = PositionRange()
    if start is not None:
        if row.low is None:
            # Nothing recorded at or after `start` yet.
            return PositionRange(empty=True)
        bounds = bounds.narrowed(low=int(row.low))
    if end is not None and row.high is not None:
        bounds = bounds.narrowed(high=int(row.high) - 1)
    return bounds


# As for the ledger: asked_at is the QuestionAsked event's recorded_at and
# asked_position its position, so asked_at never decreases as asked_position grows.
_FIRST_ASKED_AT_OR_AFTER = (
    "(SELECT a.asked_position FROM audit_answers AS a "
    "WHERE a.asked_at >= CAST(:{name} AS timestamptz) "
    "ORDER BY a.asked_at, a.asked_position LIMIT 1)"
)


async def asked_positions_for_times(
    session: AsyncSession, start: datetime | None, end: datetime | None
) -> PositionRange:
    """The asked_position range of the questions asked in [start, end)."""
    return await _range_for_times(session, _FIRST_ASKED_AT_OR_AFTER, start, end)


async def projected_position(session: AsyncSession, name: str) -> int:
    """How far a projection has read the ledger (0 before its first batch)."""
    value = await session.scalar(
        select(SubscriberCheckpoint.position).where(SubscriberCheckpoint.name == name)
    )
    return int(value or 0)
