"""Where each ledger subscriber stands: its checkpoint, lag and last failure.

A read of `subscriber_checkpoints` against the ledger head, below the projections that
write those rows, so that services (`/metrics`), the API, the console and the CLI can
read it without importing the runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.models.ledger import SubscriberCheckpoint


class NamedSubscriber(Protocol):
    """What a status needs of a subscriber: its checkpoint's name and its kind."""

    @property
    def name(self) -> str:
        """The subscriber's checkpoint name."""
        ...

    @property
    def kind(self) -> str:
        """`projection` or `reactor`."""
        ...


@dataclass(frozen=True, slots=True)
class SubscriberStatus:
    """Where one subscriber stands against the ledger head."""

    name: str
    kind: str
    position: int
    lag: int
    failing_position: int | None
    last_error: str | None
    failures: int


async def subscriber_statuses(
    session: AsyncSession, subscribers: Sequence[NamedSubscriber]
) -> list[SubscriberStatus]:
    """Checkpoint and lag of each subscriber (lag in events behind the head)."""
    ledger_head = (await store.head(session)).position
    rows = {
        row.name: row for row in (await session.execute(select(SubscriberCheckpoint))).scalars()
    }
    statuses = []
    for sub in subscribers:
        row = rows.get(sub.name)
        position = row.position if row else 0
        statuses.append(
            SubscriberStatus(
                name=sub.name,
                kind=sub.kind,
                position=position,
                lag=max(ledger_head - position, 0),
                failing_position=row.failing_position if row else None,
                last_error=row.last_error if row else None,
                failures=row.failures if row else 0,
            )
        )
    return statuses
