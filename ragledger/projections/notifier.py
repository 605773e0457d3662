"""The `notifier` reactor: mail every active admin about each anomaly, exactly once where possible.

Guarantees, and where they end:
- Nothing is lost. The mail is sent first and AnomalyNotified is appended after the
  server accepted it, in the same transaction as the checkpoint. If sending fails (the
  server is down or refuses), the reactor raises: the transaction rolls back, the
  checkpoint stays before the anomaly, and the runner retries with backoff until the
  mail goes out. The first failure is recorded as AnomalyNotificationFailed (in a
  transaction of its own, since the batch's is rolled back), so the ledger says so.
- No second mail after a committed one. AnomalyNotified and the checkpoint commit
  together, so a restarted notifier resumes after the anomaly; before sending, it also
  checks the anomaly's stream for an AnomalyNotified (which covers a checkpoint reset
  by hand).
- The one window left: the server accepted the mail, then the process died (or the
  commit failed) before the commit. SMTP has no two-phase commit, so the retry sends
  again: at-least-once, never at-most-once, since a lost security alert is worse than
  a repeated one. It is made visible rather than silent: a `sending` row is committed
  in `notifier_attempts` before each SMTP conversation and deleted with the commit;
  a retry that finds it marks its mail "[possible duplicate]" with the same
  X-Ragledger-Anomaly-Id header (mail filters can drop it) and records
  `possible_duplicate` in AnomalyNotified.
- One event per transaction (batch size 1): a failure on one anomaly must not roll
  back the record of another one already mailed in the same batch.

Bursts: at most one mail per rule and subject per NOTIFIER_GROUP_WINDOW_S, measured
on the anomalies' `recorded_at`. Anomalies inside the window are recorded as
AnomalyNotified with transport `grouped` (handled, not mailed) and counted in the next
mail for that rule and subject. With no mail server configured, the Mailer writes the
mail to the log and AnomalyNotified says transport `log`; with no active admin, the
anomaly is logged at WARNING and recorded with transport `none`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import structlog
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.events.oversight import (
    AnomalyDetected,
    AnomalyNotificationFailed,
    AnomalyNotified,
    anomaly_stream,
)
from ragledger.events.registry import registry
from ragledger.models.oversight import NotifierAttemptRow, NotifierWindowRow
from ragledger.models.users import USER_COLUMNS, Role, User
from ragledger.projections.subscriber import Reactor
from ragledger.services.anomaly_mail import AnomalyFacts, compose_anomaly_mail
from ragledger.services.mail import Mailer

log = structlog.get_logger(__name__)

_MARK_SENDING = text(
    """
    INSERT INTO notifier_attempts (anomaly_id, state, attempts, failure_recorded, updated_at)
    VALUES (:anomaly_id, 'sending', 1, false, now())
    ON CONFLICT (anomaly_id) DO UPDATE
        SET state = 'sending', attempts = notifier_attempts.attempts + 1, updated_at = now()
    RETURNING attempts
    """
)
_FAILURE_RECORDED = text(
    "SELECT failure_recorded FROM notifier_attempts WHERE anomaly_id = :anomaly_id FOR UPDATE"
)
_MARK_FAILED = text(
    """
    UPDATE notifier_attempts
    SET state = 'failed', last_error = :error, failure_recorded = true, updated_at = now()
    WHERE anomaly_id = :anomaly_id
    """
)


class NotifierReactor(Reactor):
    """Mails admins about each AnomalyDetected and records AnomalyNotified after the send."""

    name = "notifier"
    event_types = frozenset({"AnomalyDetected"})
    batch_size: ClassVar[int | None] = 1

    def __init__(self, settings: Settings, mailer: Mailer | None = None) -> None:
        self._settings = settings
        self._mailer = mailer

    @property
    def mailer(self) -> Mailer:
        """The mailer, built from settings on first use."""
        if self._mailer is None:
            self._mailer = Mailer(self._settings)
        return self._mailer

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Mail (or group) one anomaly; raise on a failed send so that the runner retries."""
        detected = registry.decode(recorded)
        assert isinstance(detected, AnomalyDetected)
        anomaly_id = detected.anomaly_id
        stream = anomaly_stream(anomaly_id)
        if any(e.event_type == "AnomalyNotified" for e in await store.read_stream(session, stream)):
            log.info("anomaly_already_notified", anomaly_id=str(anomaly_id))
            return
        metadata = EventMetadata(
            actor_id="system:notifier",
            actor_role="system",
            correlation_id=recorded.metadata.get("correlation_id"),
            causation_id=str(recorded.event_id),
        )
        at = recorded.recorded_at
        window = await session.get(
            NotifierWindowRow, (detected.rule, detected.subject), with_for_update=True
        )
        group_window = timedelta(seconds=self._settings.notifier_group_window_s)
        if window is not None and at - window.last_sent_at < group_window:
            window.grouped_since += 1
            await session.flush()
            await store.append(
                session,
                stream,
                [
                    AnomalyNotified(
                        anomaly_id=anomaly_id,
                        recipients=0,
                        grouped_count=0,
                        transport="grouped",
                        grouped_into=window.last_anomaly_id,
                    )
                ],
                metadata=metadata,
            )
            log.info(
                "anomaly_grouped",
                anomaly_id=str(anomaly_id),
                grouped_into=str(window.last_anomaly_id),
                rule=detected.rule,
                subject=detected.subject,
            )
            return
        grouped = window.grouped_since if window is not None else 0

        recipients = await self._admin_emails(session)
        possible_duplicate = False
        if not recipients:
            transport = "none"
            log.warning(
                "anomaly_not_mailed_no_admin",
                anomaly_id=str(anomaly_id),
                rule=detected.rule,
                severity=detected.severity,
                subject=detected.subject,
                summary=detected.summary,
            )
        else:
            attempt = await session.get(NotifierAttemptRow, anomaly_id)
            possible_duplicate = attempt is not None and attempt.state == "sending"
            mail = compose_anomaly_mail(
                AnomalyFacts(
                    anomaly_id=anomaly_id,
                    rule=detected.rule,
                    severity=detected.severity,
                    subject=detected.subject,
                    summary=detected.summary,
                    evidence_positions=detected.evidence_positions,
                    detected_at=at,
                    detected_position=recorded.position,
                ),
                base_url=self._settings.public_base_url,
                grouped_count=grouped,
                possible_duplicate=possible_duplicate,
            )
            engine = _engine_of(session)
            attempt_number = await self._mark_sending(engine, anomaly_id)
            try:
                result = await self.mailer.send(
                    to=recipients,
                    subject=mail.subject,
                    body=mail.text,
                    html=mail.html,
                    headers=mail.headers,
                    kind="anomaly_alert",
                    # An alert names ids and counts only, no secret: without a mail
                    # server the log is where an operator reads it.
                    log_body=True,
                )
            except Exception as exc:
                await self._mark_failed(engine, detected, attempt_number, exc, metadata)
                raise
            transport = result.transport
            # Deleted in the same transaction as AnomalyNotified: if the commit does not
            # happen, the `sending` row stays and the retry knows a mail may be out.
            await session.execute(
                delete(NotifierAttemptRow).where(NotifierAttemptRow.anomaly_id == anomaly_id)
            )

        await store.append(
            session,
            stream,
            [
                AnomalyNotified(
                    anomaly_id=anomaly_id,
                    recipients=len(recipients),
                    grouped_count=grouped,
                    transport=transport,
                    possible_duplicate=possible_duplicate,
                )
            ],
            metadata=metadata,
        )
        if window is None:
            session.add(
                NotifierWindowRow(
                    rule=detected.rule,
                    subject=detected.subject,
                    last_sent_at=at,
                    last_anomaly_id=anomaly_id,
                    grouped_since=0,
                )
            )
        else:
            window.last_sent_at = at
            window.last_anomaly_id = anomaly_id
            window.grouped_since = 0
        await session.flush()
        log.info(
            "anomaly_notified",
            anomaly_id=str(anomaly_id),
            transport=transport,
            recipients=len(recipients),
            grouped_count=grouped,
            possible_duplicate=possible_duplicate,
        )

    async def _admin_emails(self, session: AsyncSession) -> list[str]:
        result = await session.scalars(
            select(USER_COLUMNS.email)
            .where(User.role == Role.ADMIN.value, USER_COLUMNS.is_active.is_(True))
            .order_by(USER_COLUMNS.email)
        )
        return list(result.all())

    async def _mark_sending(self, engine: AsyncEngine, anomaly_id: object) -> int:
        """Commit, before the SMTP conversation, that a send is in flight; the attempt number."""
        async with AsyncSession(engine) as other, other.begin():
            attempts = await other.scalar(_MARK_SENDING, {"anomaly_id": anomaly_id})
        return int(attempts or 1)

    async def _mark_failed(
        self,
        engine: AsyncEngine,
        detected: AnomalyDetected,
        attempt_number: int,
        exc: BaseException,
        metadata: EventMetadata,
    ) -> None:
        """Commit that the send failed; the first failure of an anomaly goes to the ledger."""
        error = (str(exc) or type(exc).__name__)[:500]
        log.error(
            "anomaly_mail_failed",
            anomaly_id=str(detected.anomaly_id),
            attempt=attempt_number,
            error=error,
        )
        try:
            async with AsyncSession(engine) as other, other.begin():
                already = await other.scalar(_FAILURE_RECORDED, {"anomaly_id": detected.anomaly_id})
                await other.execute(
                    _MARK_FAILED, {"anomaly_id": detected.anomaly_id, "error": error}
                )
                if not already:
                    await store.append(
                        other,
                        anomaly_stream(detected.anomaly_id),
                        [
                            AnomalyNotificationFailed(
                                anomaly_id=detected.anomaly_id,
                                attempt=attempt_number,
                                error=error,
                            )
                        ],
                        metadata=metadata,
                    )
        except Exception as record_exc:  # noqa: BLE001  (the send error is what the runner needs)
            log.error(
                "anomaly_mail_failure_not_recorded",
                anomaly_id=str(detected.anomaly_id),
                error=repr(record_exc),
            )


def _engine_of(session: AsyncSession) -> AsyncEngine:
    """The engine behind the session (the runner binds sessions to one of its connections)."""
    bind = session.bind
    if isinstance(bind, AsyncEngine):
        return bind
    return bind.engine
