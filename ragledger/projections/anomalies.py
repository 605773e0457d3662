"""The `anomalies` projection: every anomaly, whether admins were told, and who acknowledged it."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.envelope import RecordedEvent
from ragledger.events.oversight import (
    AnomalyAcknowledged,
    AnomalyDetected,
    AnomalyNotificationFailed,
    AnomalyNotified,
)
from ragledger.events.registry import registry
from ragledger.models.oversight import AnomalyRow
from ragledger.projections.subscriber import Projection


class AnomaliesProjection(Projection):
    """Maintains `anomalies`, the admins' list."""

    name = "anomalies"
    event_types = frozenset(
        {
            "AnomalyDetected",
            "AnomalyNotified",
            "AnomalyNotificationFailed",
            "AnomalyAcknowledged",
        }
    )

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Apply one oversight event."""
        match registry.decode(recorded):
            case AnomalyDetected() as e:
                await session.execute(
                    insert(AnomalyRow)
                    .values(
                        anomaly_id=e.anomaly_id,
                        rule=e.rule,
                        severity=e.severity,
                        subject=e.subject,
                        summary=e.summary,
                        evidence_positions=list(e.evidence_positions),
                        detected_at=recorded.recorded_at,
                        detected_position=recorded.position,
                        grouped_count=0,
                        possible_duplicate=False,
                        notification_failures=0,
                        last_position=recorded.position,
                    )
                    .on_conflict_do_nothing(index_elements=[AnomalyRow.anomaly_id])
                )
            case AnomalyNotified() as e:
                await self._update(
                    session,
                    e.anomaly_id,
                    recorded,
                    notified_at=recorded.recorded_at,
                    notification_transport=e.transport,
                    notified_recipients=e.recipients,
                    grouped_count=e.grouped_count,
                    grouped_into=e.grouped_into,
                    possible_duplicate=e.possible_duplicate,
                    last_notification_error=None,
                )
            case AnomalyNotificationFailed() as e:
                await self._update(
                    session,
                    e.anomaly_id,
                    recorded,
                    notification_failures=AnomalyRow.notification_failures + 1,
                    last_notification_error=e.error,
                )
            case AnomalyAcknowledged() as e:
                await self._update(
                    session,
                    e.anomaly_id,
                    recorded,
                    acknowledged_at=recorded.recorded_at,
                    acknowledged_by=e.acknowledged_by,
                    acknowledgement_note=e.note,
                )
            case _:
                pass

    async def _update(
        self, session: AsyncSession, anomaly_id: object, recorded: RecordedEvent, **values: object
    ) -> None:
        await session.execute(
            update(AnomalyRow)
            .where(AnomalyRow.anomaly_id == anomaly_id)
            .values(last_position=recorded.position, **values)
        )

    async def reset(self, session: AsyncSession) -> None:
        """Empty the list."""
        await session.execute(delete(AnomalyRow))
