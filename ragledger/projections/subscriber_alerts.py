"""Admins hear of a subscriber that keeps failing or has stopped: one anomaly per incident.

Projections must not skip an event, so a poisoned one blocks a read model until a
person acts; a reactor may also hang. Every process that runs subscribers checks the
checkpoints every SUBSCRIBER_HEALTH_INTERVAL_S. An incident is a subscriber that
failed SUBSCRIBER_FAILURE_ALERT_COUNT times in a row at one position (`failing`), or
that is SUBSCRIBER_LAG_ALERT_EVENTS or more behind the head while its checkpoint has
not moved for SUBSCRIBER_STALL_ALERT_S (`stalled`). Each incident is keyed by the
subscriber, its kind and the position it is stuck at; its AnomalyDetected (rule
`subscriber_stuck`) goes on a stream named by that key and is appended only if the
stream is new, so however many processes watch, an incident is reported once, and the
notifier mails admins as for any anomaly. The same subscriber stuck again at another
position is a new incident.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.oversight import AnomalyDetected, anomaly_stream

log = structlog.get_logger(__name__)

RULE = "subscriber_stuck"
_NAMESPACE = uuid.UUID("6f1d4c1e-3b8a-5d2e-9c47-0a5b7e2f8d31")
_CHECKPOINTS = text(
    """
    SELECT name, position, failures, failing_position, last_error,
           extract(epoch FROM now() - updated_at) AS idle_s,
           (SELECT coalesce(max(position), 0) FROM events) AS head
    FROM subscriber_checkpoints
    """
)


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """A subscriber's checkpoint as the watcher sees it."""

    name: str
    position: int
    failures: int
    failing_position: int | None
    last_error: str | None
    idle_s: float


@dataclass(frozen=True, slots=True)
class Incident:
    """A subscriber stuck at a position, failing or stalled."""

    subscriber: str
    kind: Literal["failing", "stalled"]
    position: int
    summary: str

    @property
    def anomaly_id(self) -> uuid.UUID:
        """The same for every process that sees this incident."""
        return uuid.uuid5(_NAMESPACE, f"{RULE}:{self.subscriber}:{self.kind}:{self.position}")


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """When a subscriber counts as stuck (see Settings)."""

    failure_count: int
    lag_events: int
    stall_s: float


def alert_thresholds(settings: Settings) -> AlertThresholds:
    """The thresholds from settings."""
    return AlertThresholds(
        failure_count=settings.subscriber_failure_alert_count,
        lag_events=settings.subscriber_lag_alert_events,
        stall_s=settings.subscriber_stall_alert_s,
    )


def stuck_subscribers(
    states: Iterable[CheckpointState], head: int, thresholds: AlertThresholds
) -> list[Incident]:
    """The incidents among the checkpoints: a pure function of what was read."""
    incidents = []
    for state in states:
        lag = max(head - state.position, 0)
        if state.failures >= thresholds.failure_count:
            at = state.failing_position if state.failing_position is not None else state.position
            # Only the error's type: its message may quote event data (personal data).
            error = (state.last_error or "unknown error").split("(", 1)[0][:100]
            incidents.append(
                Incident(
                    state.name,
                    "failing",
                    at,
                    f"subscriber {state.name} failed {state.failures} times in a row at "
                    f"position {at} ({error}); it retries, and everything after that "
                    f"position waits ({lag} events behind the head)",
                )
            )
        elif lag >= thresholds.lag_events and state.idle_s >= thresholds.stall_s:
            incidents.append(
                Incident(
                    state.name,
                    "stalled",
                    state.position,
                    f"subscriber {state.name} is {lag} events behind the head and has not "
                    f"moved from position {state.position} for {round(state.idle_s)} s",
                )
            )
    return incidents


async def report_stuck_subscribers(
    sessionmaker: async_sessionmaker[AsyncSession], thresholds: AlertThresholds
) -> list[Incident]:
    """Append AnomalyDetected for each incident not reported yet; return those appended."""
    async with sessionmaker() as session:
        rows = (await session.execute(_CHECKPOINTS)).all()
    if not rows:
        return []
    head = rows[0].head
    states = [
        CheckpointState(
            r.name, r.position, r.failures, r.failing_position, r.last_error, float(r.idle_s or 0)
        )
        for r in rows
    ]
    reported = []
    for incident in stuck_subscribers(states, head, thresholds):
        if await _report(sessionmaker, incident):
            reported.append(incident)
    return reported


async def _report(sessionmaker: async_sessionmaker[AsyncSession], incident: Incident) -> bool:
    detected = AnomalyDetected(
        anomaly_id=incident.anomaly_id,
        rule=RULE,
        severity="high",
        subject=f"subscriber:{incident.subscriber}",
        summary=incident.summary,
        evidence_positions=(incident.position,) if incident.kind == "failing" else (),
    )
    try:
        await store.append_autocommitted(
            sessionmaker,
            anomaly_stream(incident.anomaly_id),
            [detected],
            expected_version=store.NO_STREAM,
            metadata=EventMetadata(actor_id="system:subscriber_alerts", actor_role="system"),
        )
    except WrongExpectedVersionError:
        return False  # reported already, by this process or another
    log.error(
        "subscriber_stuck",
        subscriber=incident.subscriber,
        kind=incident.kind,
        position=incident.position,
        anomaly_id=str(incident.anomaly_id),
    )
    return True


async def watch_subscribers(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Check the checkpoints every SUBSCRIBER_HEALTH_INTERVAL_S until cancelled."""
    thresholds = alert_thresholds(settings)
    while True:
        await asyncio.sleep(settings.subscriber_health_interval_s)
        try:
            await report_stuck_subscribers(sessionmaker, thresholds)
        except Exception as exc:  # noqa: BLE001  (checked again at the next tick)
            log.warning("subscriber_watch_failed", error=repr(exc))
