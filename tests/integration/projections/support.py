"""Subscribers used by the runner tests: each writes one row per event it applies."""

from __future__ import annotations

import os
import signal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ragledger.events import store
from ragledger.events.envelope import NewEvent, RecordedEvent
from ragledger.projections.subscriber import Projection

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS test_effects (subscriber text NOT NULL, position bigint NOT NULL)"
)


async def create_effects_table(owner_engine: AsyncEngine) -> None:
    """The table the test subscribers write their effects to."""
    async with owner_engine.begin() as conn:
        await conn.execute(text(EFFECTS_DDL))
        await conn.execute(text("GRANT SELECT, INSERT, DELETE ON test_effects TO ragledger_app"))


async def append_numbered(engine_sessionmaker, count: int, *, stream: str = "n") -> None:
    """Append `count` events in batches of 10."""
    for start in range(0, count, 10):
        async with engine_sessionmaker() as session, session.begin():
            await store.append(
                session,
                stream,
                [NewEvent("Numbered", {"n": n}) for n in range(start, min(start + 10, count))],
            )


async def effects(engine: AsyncEngine, subscriber: str) -> list[int]:
    """Positions the subscriber applied, with repeats if any, sorted."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT position FROM test_effects WHERE subscriber = :s ORDER BY position"),
            {"s": subscriber},
        )
        return [row.position for row in rows]


class RecordingProjection(Projection):
    """Writes (name, position) per event; can fail or kill its process at a position."""

    event_types = None

    def __init__(
        self,
        name: str = "recording",
        *,
        fail_at: int | None = None,
        fail_times: int | None = None,
        kill_at: int | None = None,
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.fail_at = fail_at
        self.fail_times = fail_times
        self.kill_at = kill_at
        self.failures = 0

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Record the event, failing or dying where asked."""
        await session.execute(
            text("INSERT INTO test_effects (subscriber, position) VALUES (:s, :p)"),
            {"s": self.name, "p": recorded.position},
        )
        if self.kill_at is not None and recorded.position == self.kill_at:
            await session.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if recorded.position == self.fail_at and (
            self.fail_times is None or self.failures < self.fail_times
        ):
            self.failures += 1
            raise RuntimeError(f"boom at {recorded.position}")

    async def reset(self, session: AsyncSession) -> None:
        """Forget every effect."""
        await session.execute(
            text("DELETE FROM test_effects WHERE subscriber = :s"), {"s": self.name}
        )
