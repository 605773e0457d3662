"""What the runner drives: projections (rebuildable read models) and reactors (side effects)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.envelope import RecordedEvent


class HandlerError(Exception):
    """A subscriber failed on the event at `position`."""

    def __init__(self, subscriber: str, position: int, cause: BaseException) -> None:
        super().__init__(f"{subscriber} failed at position {position}: {cause!r}")
        self.subscriber = subscriber
        self.position = position
        self.cause = cause


class Subscriber:
    """Consumes the ledger in order; its effects commit with its checkpoint.

    Subclasses set `name`, optionally `event_types` (None: every event), and implement
    `handle`, which runs inside the batch's transaction and must not commit.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["projection", "reactor"]]
    event_types: ClassVar[frozenset[str] | None] = None
    # Events per transaction, when the runner's default does not suit (a reactor doing
    # slow work per event takes one at a time so that each result commits on its own).
    batch_size: ClassVar[int | None] = None
    # Seconds from the start of one batch to the next at the least: under a steady stream
    # of appends, fewer and bigger batches (for a subscriber that need not be fresh to
    # the millisecond); a lone append after a quiet spell is still taken at once.
    min_batch_interval_s: ClassVar[float] = 0.0

    async def apply_next(
        self, session: AsyncSession, *, after: int, up_to: int, limit: int
    ) -> tuple[int, int]:
        """Apply the events in (after, up_to], at most `limit`; (how many, the last one's position).

        The default reads whole events of `event_types` and calls `handle_batch`; a
        subscriber that needs only part of each event may read just that.
        """
        events = await store.read_all(
            session, after=after, up_to=up_to, limit=limit, event_types=self.event_types
        )
        if events:
            await self.handle_batch(session, events)
        return len(events), events[-1].position if events else after

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Apply a batch; the default calls `handle` per event and names the failing one."""
        for recorded in events:
            try:
                await self.handle(session, recorded)
            except Exception as exc:
                raise HandlerError(self.name, recorded.position, exc) from exc

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Apply one event."""
        raise NotImplementedError

    def max_attempts(self) -> int | None:
        """Failures in a row at one event before `give_up` is called; None: retry forever.

        Projections retry forever (a read model must not skip an event); a reactor that
        can record the failure as a fact of its own may give up and move on.
        """
        return None

    async def give_up(
        self, session: AsyncSession, recorded: RecordedEvent, cause: BaseException, attempts: int
    ) -> None:
        """Record that `recorded` could not be handled; the runner then moves past it."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the subscriber holds (a child process) when the runner stops.

        The runner calls it once its loops are done; the subscriber may be driven again
        after it. The default holds nothing.
        """


class Projection(Subscriber):
    """A read model: a pure function of the events, rebuildable from position 0."""

    kind: ClassVar[Literal["projection", "reactor"]] = "projection"

    async def reset(self, session: AsyncSession) -> None:
        """Delete every row of the read model (before a rebuild)."""
        raise NotImplementedError


class Reactor(Subscriber):
    """Causes side effects and appends new events; never rerun by a rebuild."""

    kind: ClassVar[Literal["projection", "reactor"]] = "reactor"
