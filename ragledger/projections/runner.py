"""The subscriber runner: one consumer per subscriber across all processes, exactly once.

For each subscriber the runner holds a dedicated connection with a session-level
advisory lock on the subscriber's name; whoever holds it consumes, other runners stand
by and retry. Every batch runs on that same connection in one transaction: lock the
checkpoint row, read events after it, let the subscriber apply them, move the
checkpoint, commit. A crash anywhere before the commit applies nothing; the next
consumer resumes from the checkpoint. LISTEN/NOTIFY wakes consumers at once; a poll
interval covers a lost notification or a dropped listener.

A NOTIFY carries only the new head. The listener looks up which event types arrived
(one small query on its own connection) and wakes only the subscribers that handle one
of them: a subscriber of document events is not woken by every question. It moves its
checkpoint past the events it ignores at its next poll, so its lag in events may read
up to one poll interval's worth of appends it has no use for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import structlog
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ragledger.core.database import to_asyncpg_dsn
from ragledger.events.store import LOCK_NAMESPACE, NOTIFY_CHANNEL
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.projections.failures import ensure_checkpoint, give_up_on_event, record_failure
from ragledger.projections.subscriber import HandlerError, Projection, Subscriber

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)


_HEAD_POSITION = "SELECT coalesce(max(position), 0) FROM events"
_TYPES_BETWEEN = "SELECT DISTINCT event_type FROM events WHERE position > $1 AND position <= $2"


def subscriber_lock_id(name: str) -> int:
    """A stable 31-bit advisory lock id for a subscriber name (id 1 is the append lock)."""
    return 2 + int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % (2**31 - 3)


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """Timing and batch size of the runner (see Settings for how they were chosen)."""

    batch_size: int = 500
    poll_interval_s: float = 1.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    standby_retry_s: float = 2.0
    coalesce_s: float = 0.02


def runner_config(settings: Settings) -> RunnerConfig:
    """The runner's timing from settings."""
    return RunnerConfig(
        batch_size=settings.runner_batch_size,
        poll_interval_s=settings.runner_poll_interval_s,
        backoff_initial_s=settings.runner_backoff_initial_s,
        backoff_max_s=settings.runner_backoff_max_s,
        standby_retry_s=settings.runner_standby_retry_s,
    )


# The checkpoint row (locked, so a rebuild resetting it waits for the batch in flight)
# and the ledger head in one round trip. Everything at or below a seen head is committed,
# so a filtered read that finds fewer than a batch can safely skip to the head.
_CHECKPOINT_AND_HEAD = text(
    """
    SELECT c.position,
           coalesce((SELECT e.position FROM events AS e ORDER BY e.position DESC LIMIT 1), 0)
    FROM subscriber_checkpoints AS c
    WHERE c.name = :name
    FOR UPDATE OF c
    """
)
_MOVE_CHECKPOINT = text(
    """
    UPDATE subscriber_checkpoints
    SET position = :position, updated_at = now(), last_error = NULL,
        failing_position = NULL, failures = 0
    WHERE name = :name
    """
)


async def process_batch(session: AsyncSession, subscriber: Subscriber, *, batch_size: int) -> int:
    """Apply the next batch inside the session's open transaction; return events seen.

    The caller owns the transaction and the subscriber's advisory lock. The checkpoint
    row is locked too, so a rebuild resetting it waits for the batch in flight.
    """
    seen, _position, _head = await _apply_next_batch(session, subscriber, batch_size=batch_size)
    return seen


async def _apply_next_batch(
    session: AsyncSession, subscriber: Subscriber, *, batch_size: int
) -> tuple[int, int, int]:
    """(events seen, the checkpoint after the batch, the head it read); see process_batch."""
    params = {"name": subscriber.name}
    row = (await session.execute(_CHECKPOINT_AND_HEAD, params)).first()
    if row is None:
        await ensure_checkpoint(session, subscriber.name)
        row = (await session.execute(_CHECKPOINT_AND_HEAD, params)).one()
    position, ledger_head = row
    if ledger_head <= position:
        return 0, position, ledger_head
    read, last = await subscriber.apply_next(
        session, after=position, up_to=ledger_head, limit=batch_size
    )
    new_position = last if read == batch_size else ledger_head
    await session.execute(_MOVE_CHECKPOINT, {"name": subscriber.name, "position": new_position})
    return new_position - position, new_position, ledger_head


class SubscriberRunner:
    """Drives a set of subscribers until stopped."""

    def __init__(
        self,
        engine: AsyncEngine,
        subscribers: Sequence[Subscriber],
        config: RunnerConfig | None = None,
    ) -> None:
        self.engine = engine
        self.subscribers = list(subscribers)
        self.config = config or RunnerConfig()
        self._wake = {s.name: asyncio.Event() for s in self.subscribers}
        self._min_interval = {
            s.name: getattr(s, "min_batch_interval_s", 0.0) for s in self.subscribers
        }
        # The highest head announced by NOTIFY, and the subscribers that must look at the
        # ledger whatever it says (a (re)connected listener may have missed some).
        self._notified_head = 0
        self._must_look: set[str] = set()
        # Per subscriber, the highest head that brought an event of a type it handles;
        # the listener's lookup of types covers positions up to `_typed_up_to`.
        self._relevant_head: dict[str, int] = dict.fromkeys(self._wake, 0)
        self._typed_up_to: int | None = None
        self._look_up_types = asyncio.Event()
        self._stop = asyncio.Event()
        self.active: set[str] = set()

    def stop(self) -> None:
        """Ask every loop to finish its batch and return."""
        self._stop.set()
        self._look_up_types.set()
        for wake in self._wake.values():
            wake.set()

    async def run(self, *, grace_s: float = 10.0) -> None:
        """Run the listener and one loop per subscriber until stop() is called.

        On stop, each loop finishes (commits or rolls back) the batch in flight; loops
        still busy after `grace_s` are cancelled, which rolls their batch back. Then each
        subscriber is closed (`aclose`).
        """
        listener = asyncio.create_task(self._listen(), name="runner-listener")
        consumers = [
            asyncio.create_task(self._consume(sub), name=f"runner-{sub.name}")
            for sub in self.subscribers
        ]
        try:
            await self._stop.wait()
        finally:
            self.stop()
            listener.cancel()
            _done, pending = await asyncio.wait(consumers, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(listener, *consumers, return_exceptions=True)
            for subscriber in self.subscribers:
                await subscriber.aclose()

    @property
    def listener_ready(self) -> bool:
        """Whether the listener is connected and knows the ledger's head."""
        return self._typed_up_to is not None

    def on_notify(self, *args: object) -> None:
        """A NOTIFY (connection, pid, channel, head) or a reconnect (no arguments).

        With the listener's type lookup running, a new head only asks it to look up the
        types and wake whom they concern; without it (or for a reconnect or a payload
        that is not a position), every consumer wakes.
        """
        payload = args[3] if len(args) == 4 else None
        if isinstance(payload, str) and payload.isdigit():
            head = int(payload)
            self._notified_head = max(self._notified_head, head)
            if self._typed_up_to is not None:
                self._look_up_types.set()
                return
            for name in self._relevant_head:
                self._relevant_head[name] = max(self._relevant_head[name], head)
        else:
            self._must_look.update(self._wake)
        for wake in self._wake.values():
            wake.set()

    def _wake_those_concerned(self, head: int, types: set[str] | None) -> None:
        """Wake the consumers that handle one of `types` (None: unknown, wake all)."""
        for subscriber in self.subscribers:
            handles = getattr(subscriber, "event_types", None)
            if types is None or handles is None or not handles.isdisjoint(types):
                name = subscriber.name
                self._relevant_head[name] = max(self._relevant_head[name], head)
                self._wake[name].set()

    async def _look_up_new_types(self, connection: asyncpg.Connection) -> None:
        """On each new head, find which event types arrived and wake whom they concern."""
        self._typed_up_to = await connection.fetchval(_HEAD_POSITION)
        # Everyone looks once: events appended while (re)connecting sent no NOTIFY here.
        self.on_notify()
        try:
            while not self._stop.is_set():
                await self._look_up_types.wait()
                self._look_up_types.clear()
                head, after = self._notified_head, self._typed_up_to
                if head <= after:
                    continue
                try:
                    rows = await connection.fetch(_TYPES_BETWEEN, after, head)
                except BaseException:
                    self._wake_those_concerned(head, None)
                    raise
                self._typed_up_to = head
                self._wake_those_concerned(head, {row[0] for row in rows})
        finally:
            self._typed_up_to = None

    async def _listen(self) -> None:
        dsn = to_asyncpg_dsn(self.engine.url.render_as_string(hide_password=False))
        delay = self.config.backoff_initial_s
        while not self._stop.is_set():
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(dsn)
                await connection.add_listener(NOTIFY_CHANNEL, self.on_notify)
                delay = self.config.backoff_initial_s
                # A connection the server drops is noticed at once, not at the next poll.
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _connection, event=lost: event.set())
                looking_up = asyncio.create_task(self._look_up_new_types(connection))
                dropped = asyncio.create_task(lost.wait())
                try:
                    while not self._stop.is_set() and not connection.is_closed():
                        await asyncio.wait(
                            {looking_up, dropped},
                            timeout=self.config.poll_interval_s,
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                        if looking_up.done():
                            looking_up.result()  # its error ends this connection
                            break
                        if dropped.done():
                            log.warning("runner_listener_dropped")
                            break
                finally:
                    for helper in (looking_up, dropped):
                        helper.cancel()
                        with contextlib.suppress(BaseException):
                            await helper
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("runner_listener_lost", error=str(exc), retry_in_s=delay)
                await self._sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
            except Exception as exc:  # noqa: BLE001  (the listener must outlive any error)
                log.warning("runner_listener_error", error=repr(exc), retry_in_s=delay)
                await self._sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _consume(self, subscriber: Subscriber) -> None:
        lock_id = subscriber_lock_id(subscriber.name)
        standing_by = False
        while not self._stop.is_set():
            try:
                async with self.engine.connect() as conn:
                    got = await conn.scalar(
                        text("SELECT pg_try_advisory_lock(:ns, :id)"),
                        {"ns": LOCK_NAMESPACE, "id": lock_id},
                    )
                    await conn.commit()
                    if not got:
                        if not standing_by:
                            standing_by = True
                            log.info("subscriber_standby", subscriber=subscriber.name)
                        await self._sleep(self.config.standby_retry_s)
                        continue
                    standing_by = False
                    self.active.add(subscriber.name)
                    log.info("subscriber_active", subscriber=subscriber.name)
                    try:
                        await self._consume_locked(conn, subscriber)
                    finally:
                        self.active.discard(subscriber.name)
                        with contextlib.suppress(Exception):
                            await conn.execute(
                                text("SELECT pg_advisory_unlock(:ns, :id)"),
                                {"ns": LOCK_NAMESPACE, "id": lock_id},
                            )
                            await conn.commit()
            except (OSError, asyncpg.PostgresError, ConnectionError) as exc:
                log.warning(
                    "subscriber_connection_lost", subscriber=subscriber.name, error=str(exc)
                )
                await self._sleep(self.config.backoff_initial_s)
            except Exception as exc:  # noqa: BLE001  (a DBAPI error wrapping a lost connection)
                log.warning("subscriber_loop_error", subscriber=subscriber.name, error=repr(exc))
                await self._sleep(self.config.backoff_initial_s)

    async def _consume_locked(self, conn: AsyncConnection, subscriber: Subscriber) -> None:
        delay = self.config.backoff_initial_s
        wake = self._wake[subscriber.name]
        position = -1  # unknown until the first batch
        while not self._stop.is_set():
            wake.clear()
            self._must_look.discard(subscriber.name)
            started = time.perf_counter()
            batch_at = time.monotonic()
            try:
                async with (
                    AsyncSession(bind=conn, expire_on_commit=False) as session,
                    session.begin(),
                ):
                    seen, position, head = await _apply_next_batch(
                        session,
                        subscriber,
                        batch_size=subscriber.batch_size or self.config.batch_size,
                    )
            except HandlerError as exc:
                failures = await self._failed(subscriber, exc.position, exc.cause, delay)
                limit = subscriber.max_attempts()
                if (
                    limit is not None
                    and failures >= limit
                    and await give_up_on_event(
                        conn,
                        subscriber,
                        exc,
                        attempts=failures,
                        batch_size=subscriber.batch_size or self.config.batch_size,
                    )
                ):
                    delay = self.config.backoff_initial_s
                    continue
                await self._sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            except Exception as exc:
                if conn.closed or conn.invalidated:
                    raise
                await self._failed(subscriber, None, exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            delay = self.config.backoff_initial_s
            if seen:
                log.debug(
                    "subscriber_batch",
                    subscriber=subscriber.name,
                    events=seen,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                )
                if position < head:
                    continue  # a full batch: more is waiting
            # Caught up with the head this batch read: whatever was appended since has
            # notified (or the poll finds it), so there is no empty transaction to
            # run just to learn that nothing is new.
            await self.wait_for_news(subscriber.name, position, last_batch_at=batch_at)

    async def wait_for_news(
        self, name: str, position: int, *, last_batch_at: float | None = None
    ) -> None:
        """Sleep until the ledger may hold events past `position`, or the poll interval.

        Wake-ups for heads this consumer has already passed (their NOTIFY arrived while
        it was applying the batch that covered them) cost no transaction. After a
        wake-up, a short pause lets a burst of appends arrive and go in one batch; a
        subscriber with a `min_batch_interval_s` waits until that long after its last
        batch (`last_batch_at`, monotonic) began.
        """
        wake = self._wake[name]
        deadline = time.monotonic() + self.config.poll_interval_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=remaining)
            wake.clear()
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            if name in self._must_look or self._relevant_head[name] > position:
                pause = self.config.coalesce_s
                if last_batch_at is not None:
                    pause = max(pause, last_batch_at + self._min_interval[name] - time.monotonic())
                if pause > 0:
                    await self._sleep(pause)
                return

    async def _failed(
        self, subscriber: Subscriber, position: int | None, cause: BaseException, delay: float
    ) -> int:
        """Log and record a failed batch; the failures in a row there (0: not recorded)."""
        log.error(
            "subscriber_failed",
            subscriber=subscriber.name,
            position=position,
            error=repr(cause),
            retry_in_s=delay,
        )
        try:
            return await record_failure(self.engine, subscriber.name, position, repr(cause))
        except Exception:  # noqa: BLE001  (the retry goes on; the record is best effort)
            return 0


async def run_until_caught_up(
    engine: AsyncEngine, subscriber: Subscriber, *, batch_size: int = 500
) -> bool:
    """Consume up to the current head if no other process holds the subscriber.

    Returns False, doing nothing, when another runner is the active consumer. The
    subscriber is closed (`aclose`) at the end; it reopens what it needs when next used.
    """
    lock_id = subscriber_lock_id(subscriber.name)
    async with engine.connect() as conn:
        got = await conn.scalar(
            text("SELECT pg_try_advisory_lock(:ns, :id)"), {"ns": LOCK_NAMESPACE, "id": lock_id}
        )
        await conn.commit()
        if not got:
            return False
        try:
            while True:
                async with (
                    AsyncSession(bind=conn, expire_on_commit=False) as session,
                    session.begin(),
                ):
                    seen = await process_batch(
                        session, subscriber, batch_size=subscriber.batch_size or batch_size
                    )
                if not seen:
                    return True
        finally:
            await subscriber.aclose()
            await conn.execute(
                text("SELECT pg_advisory_unlock(:ns, :id)"), {"ns": LOCK_NAMESPACE, "id": lock_id}
            )
            await conn.commit()


async def reset_projection(engine: AsyncEngine, projection: Projection) -> None:
    """Empty a projection and move its checkpoint to 0, in one transaction."""
    async with AsyncSession(engine) as session, session.begin():
        await ensure_checkpoint(session, projection.name)
        await session.execute(
            select(SubscriberCheckpoint.position)
            .where(SubscriberCheckpoint.name == projection.name)
            .with_for_update()
        )
        await projection.reset(session)
        await session.execute(
            update(SubscriberCheckpoint)
            .where(SubscriberCheckpoint.name == projection.name)
            .values(position=0, last_error=None, failing_position=None, failures=0)
        )
