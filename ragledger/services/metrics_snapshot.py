"""What `/metrics` reads from PostgreSQL at scrape time: head, subscriber lag, anomalies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.metrics import AnomalyCount, SubscriberLag
from ragledger.events import store
from ragledger.models.ledger import EventRow
from ragledger.models.oversight import AnomalyRow
from ragledger.services.subscriber_status import NamedSubscriber, subscriber_statuses


async def read_subscriber_lags(
    session: AsyncSession, subscribers: Sequence[NamedSubscriber]
) -> tuple[int, list[SubscriberLag]]:
    """The ledger head and each subscriber's lag in events and in seconds.

    The seconds are the age of the first event after the checkpoint (0 when caught up):
    how long the oldest unapplied fact has been waiting.
    """
    statuses = await subscriber_statuses(session, subscribers)
    # subscriber_statuses read the head already: lag = head - checkpoint (never negative).
    head = (
        statuses[0].position + statuses[0].lag if statuses else (await store.head(session)).position
    )
    behind = [s.position + 1 for s in statuses if s.lag > 0]
    recorded: dict[int, datetime] = {}
    if behind:
        rows = await session.execute(
            select(EventRow.position, EventRow.recorded_at).where(EventRow.position.in_(behind))
        )
        recorded = {row.position: row.recorded_at for row in rows}
    now = datetime.now(UTC)
    lags = []
    for status in statuses:
        oldest = recorded.get(status.position + 1) if status.lag > 0 else None
        lags.append(
            SubscriberLag(
                name=status.name,
                events=status.lag,
                seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
                failures=status.failures,
            )
        )
    return head, lags


async def read_anomaly_counts(session: AsyncSession) -> list[AnomalyCount]:
    """Anomalies by rule, severity and acknowledgement."""
    acknowledged = AnomalyRow.acknowledged_at.is_not(None)
    rows = await session.execute(
        select(AnomalyRow.rule, AnomalyRow.severity, acknowledged.label("ack"), func.count())
        .group_by(AnomalyRow.rule, AnomalyRow.severity, acknowledged)
        .order_by(AnomalyRow.rule)
    )
    return [AnomalyCount(rule, severity, bool(ack), int(n)) for rule, severity, ack, n in rows]
