"""A subscriber's failures: counted on its checkpoint row, and given up on where allowed.

The runner retries a failing batch with backoff. Each failure is recorded on the
checkpoint row with how many times in a row it failed at that position; a subscriber
whose `max_attempts()` is reached there (a reactor that can record the failure as a
fact, such as ingestion's DocumentIngestionFailed) gives up on that one event and the
runner moves on, instead of retrying it forever with everything behind it waiting.
"""

from __future__ import annotations

import structlog
from sqlalchemy import case, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ragledger.events import store
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.projections.subscriber import HandlerError, Subscriber

log = structlog.get_logger(__name__)

_LOCK_CHECKPOINT = text("SELECT position FROM subscriber_checkpoints WHERE name = :name FOR UPDATE")
_MOVE_PAST = text(
    """
    UPDATE subscriber_checkpoints
    SET position = :position, updated_at = now(), last_error = NULL,
        failing_position = NULL, failures = 0
    WHERE name = :name
    """
)


async def ensure_checkpoint(session: AsyncSession, name: str) -> None:
    """Create the subscriber's checkpoint row at position 0 if it is missing."""
    await session.execute(
        insert(SubscriberCheckpoint)
        .values(name=name, position=0, failures=0)
        .on_conflict_do_nothing(index_elements=[SubscriberCheckpoint.name])
    )


async def record_failure(engine: AsyncEngine, name: str, position: int | None, error: str) -> int:
    """Record a failed batch of subscriber `name`; return its failures in a row there."""
    async with AsyncSession(engine) as session, session.begin():
        await ensure_checkpoint(session, name)
        same = SubscriberCheckpoint.failing_position.is_not_distinct_from(position)
        return (
            await session.execute(
                update(SubscriberCheckpoint)
                .where(SubscriberCheckpoint.name == name)
                .values(
                    last_error=error[:2000],
                    failing_position=position,
                    failures=case((same, SubscriberCheckpoint.failures + 1), else_=1),
                )
                .returning(SubscriberCheckpoint.failures)
            )
        ).scalar_one()


async def give_up_on_event(
    conn: AsyncConnection,
    subscriber: Subscriber,
    error: HandlerError,
    *,
    attempts: int,
    batch_size: int,
) -> bool:
    """Apply the batch up to the failing event, let the subscriber record it, move past.

    One transaction on the consumer's connection, like any batch: the events before the
    failing one take effect, the subscriber records its failure, and the checkpoint
    moves to the failing position. False when the checkpoint is no longer before it or
    the give-up itself failed (the runner then keeps retrying).
    """
    try:
        async with AsyncSession(bind=conn, expire_on_commit=False) as session, session.begin():
            position = (
                await session.execute(_LOCK_CHECKPOINT, {"name": subscriber.name})
            ).scalar_one_or_none()
            if position is None or position >= error.position:
                return False
            events = await store.read_all(
                session,
                after=position,
                up_to=error.position,
                limit=batch_size,
                event_types=subscriber.event_types,
            )
            if not events or events[-1].position != error.position:
                return False
            if len(events) > 1:
                await subscriber.handle_batch(session, events[:-1])
            await subscriber.give_up(session, events[-1], error.cause, attempts)
            await session.execute(_MOVE_PAST, {"name": subscriber.name, "position": error.position})
    except Exception as exc:
        if conn.closed or conn.invalidated:
            raise
        log.error(
            "subscriber_give_up_failed",
            subscriber=subscriber.name,
            position=error.position,
            error=repr(exc),
        )
        return False
    log.warning(
        "subscriber_gave_up",
        subscriber=subscriber.name,
        position=error.position,
        attempts=attempts,
        error=repr(error.cause),
    )
    return True
