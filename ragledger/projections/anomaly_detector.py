"""The `anomaly_detector` reactor: watch the ledger, append AnomalyDetected for what looks wrong.

The rules themselves are pure functions (services/anomaly_rules.py). This reactor
feeds them: it keeps the facts that windowed rules count in its own table
(`anomaly_detector_signals`), written in the batch's transaction together with its
checkpoint, so its state always matches what it has consumed, and a crash replays the
batch without counting anything twice. Time is the ledger's `recorded_at`, never the
wall clock, so a backlog is judged as it happened.

Each finding is appended as AnomalyDetected on its own stream `anomaly-<id>`, in the
same transaction. A rule does not raise the same subject again within
ANOMALY_REDETECT_AFTER_S: a burst gives one anomaly per period, and the next one says
how many findings were held back meanwhile.

The audit events (AuditViewed, AuditExported) and the ledger's verifications belong to other
modules; they are matched by name and read from their payloads, so this reactor works
whichever of them exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.ids import uuid7
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.access import AccessDenied, LoginFailed
from ragledger.events.documents import DocumentChunked
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.events.oversight import AnomalyDetected, anomaly_stream
from ragledger.events.questions import AnswerGenerated, QuestionAsked
from ragledger.events.registry import registry
from ragledger.models.oversight import DetectorRaisedRow, DetectorSignalRow
from ragledger.projections.subscriber import HandlerError, Reactor
from ragledger.services import anomaly_rules as rules
from ragledger.services.anomaly_rules import Finding

log = structlog.get_logger(__name__)

# Signal kinds in anomaly_detector_signals.
QUESTION = "question"
AUTH_FAILURE = "auth_failure"
AUDIT_VIEW = "audit_view"
EXPORT = "export"
# A checked generative answer: size 1 when unsupported, 0 when supported.
ANSWER_SUPPORT = "answer_support"

# Exports are rare, so their history is kept for a year (the "usual export" of someone
# who exports monthly needs more than the baseline days).
EXPORT_HISTORY_DAYS = 366

_SIGNALS = DetectorSignalRow.__table__

# Totals per window of the same length as the current one, ending where it starts:
# bucket k covers (at - (k+1)w, at - kw], and only buckets with a signal appear.
_BASELINE = text(
    """
    SELECT sum(size) AS total
    FROM anomaly_detector_signals
    WHERE kind = :kind AND subject = :subject
      AND at > :since AND at <= :window_start
    GROUP BY floor(extract(epoch FROM (CAST(:at AS timestamptz) - at)) / :window_s)
    """
)


class AnomalyDetectorReactor(Reactor):
    """Runs the anomaly rules over the ledger and records what they find."""

    name = "anomaly_detector"
    event_types = frozenset(
        {
            "QuestionAsked",
            "AnswerGenerated",
            "DocumentChunked",
            "LoginFailed",
            "AccessDenied",
            "AuditViewed",
            "AuditExported",
            "LedgerVerified",
            "LedgerVerificationFailed",
        }
    )

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Findings of the batch in progress: (position, stream, event, metadata).
        self._pending: list[tuple[int, str, AnomalyDetected, EventMetadata]] = []

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Apply the batch, forget signals older than any window looks back, then append.

        The findings are appended last: an append takes the ledger's lock until the
        batch commits, and taken mid-batch it would stall every writer (answers,
        logins) for the rest of a batch of up to RUNNER_BATCH_SIZE events.
        """
        self._pending = []
        await super().handle_batch(session, events)
        if events:
            await self._prune(session, events[-1].recorded_at)
        pending, self._pending = self._pending, []
        for position, stream_id, event, metadata in pending:
            try:
                await store.append(
                    session,
                    stream_id,
                    [event],
                    expected_version=store.NO_STREAM,
                    metadata=metadata,
                )
            except Exception as exc:
                raise HandlerError(self.name, position, exc) from exc

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Run the rules that concern this event and raise what they find."""
        for finding in await self._findings(session, recorded):
            await self._raise(session, recorded, finding)

    async def _findings(self, session: AsyncSession, recorded: RecordedEvent) -> list[Finding]:
        found: list[Finding | None] = []
        match recorded.event_type:
            case "QuestionAsked":
                asked = registry.decode(recorded)
                assert isinstance(asked, QuestionAsked)
                found.append(await self._question_rate(session, recorded, asked))
                found.append(
                    rules.injected_question(
                        question_id=asked.question_id,
                        asked_by=asked.asked_by,
                        question=asked.question,
                        position=recorded.position,
                    )
                )
            case "AnswerGenerated":
                answer = registry.decode(recorded)
                assert isinstance(answer, AnswerGenerated)
                found.append(
                    rules.uncited_answer(
                        question_id=answer.question_id,
                        model=answer.model,
                        citations=answer.citations,
                        no_context=answer.no_context,
                        position=recorded.position,
                        declined=answer.declined is not None,
                    )
                )
                found.append(await self._unsupported_run(session, recorded, answer))
            case "DocumentChunked":
                chunked = registry.decode(recorded)
                assert isinstance(chunked, DocumentChunked)
                found.append(
                    rules.injected_document(
                        document_id=chunked.document_id,
                        version=chunked.version,
                        chunk_texts=[c.text for c in chunked.chunks],
                        position=recorded.position,
                    )
                )
            case "LoginFailed" | "AccessDenied":
                found.extend(await self._auth_failure(session, recorded))
            case "AuditViewed" | "AuditExported":
                found.append(await self._audit_read(session, recorded))
            case "LedgerVerified" | "LedgerVerificationFailed":
                # Failures are LedgerVerificationFailed; LedgerVerified with valid=false
                # is how failures were recorded before that event existed.
                payload = recorded.payload
                failed = recorded.event_type == "LedgerVerificationFailed"
                found.append(
                    rules.ledger_verification_failed(
                        valid=False if failed else payload.get("valid"),
                        position=recorded.position,
                        first_invalid_position=payload.get("first_invalid_position"),
                        reason=payload.get("reason"),
                        digest_position=payload.get("digest_position"),
                    )
                )
            case _:
                pass
        return [finding for finding in found if finding is not None]

    async def _question_rate(
        self, session: AsyncSession, recorded: RecordedEvent, asked: QuestionAsked
    ) -> Finding | None:
        settings = self._settings
        subject = rules.user_subject(asked.asked_by)
        window_s = settings.anomaly_question_window_s
        await self._signal(session, QUESTION, subject, recorded)
        positions, _total = await self._window(session, QUESTION, subject, recorded, window_s)
        # The limit is never below the floor: skip the baseline query for ordinary use.
        if len(positions) <= settings.anomaly_question_floor:
            return None
        return rules.question_rate(
            user_id=asked.asked_by,
            window_positions=positions,
            baseline_window_counts=await self._baseline(
                session, QUESTION, subject, recorded.recorded_at, window_s
            ),
            floor=settings.anomaly_question_floor,
            factor=settings.anomaly_question_factor,
            window_s=window_s,
        )

    async def _unsupported_run(
        self, session: AsyncSession, recorded: RecordedEvent, answer: AnswerGenerated
    ) -> Finding | None:
        settings = self._settings
        if answer.mode != "generative" or answer.support is None or answer.no_context:
            return None
        unsupported = rules.is_unsupported(
            answer.support.groundedness, below=settings.anomaly_unsupported_below
        )
        subject = f"model:{answer.model}"
        await self._signal(session, ANSWER_SUPPORT, subject, recorded, size=1 if unsupported else 0)
        rows = (
            await session.execute(
                select(_SIGNALS.c.position, _SIGNALS.c.size)
                .where(_SIGNALS.c.kind == ANSWER_SUPPORT, _SIGNALS.c.subject == subject)
                .order_by(_SIGNALS.c.position.desc())
                .limit(settings.anomaly_unsupported_run)
            )
        ).all()
        return rules.unsupported_answers(
            model=answer.model,
            recent=[(row.position, row.size > 0) for row in rows],
            run=settings.anomaly_unsupported_run,
            below=settings.anomaly_unsupported_below,
        )

    async def _auth_failure(
        self, session: AsyncSession, recorded: RecordedEvent
    ) -> list[Finding | None]:
        settings = self._settings
        event = registry.decode(recorded)
        subjects: list[tuple[str, int]] = []
        if isinstance(event, LoginFailed):
            if event.user_id is not None:
                subjects.append((rules.user_subject(event.user_id), 0))
            elif event.email.strip():
                subjects.append((rules.email_subject(event.email), 0))
        elif isinstance(event, AccessDenied) and event.user_id is not None:
            subjects.append((rules.user_subject(event.user_id), 0))
        client_ip = recorded.metadata.get("client_ip")
        if isinstance(client_ip, str) and client_ip:
            subjects.append((rules.address_subject(client_ip), 1))
        found: list[Finding | None] = []
        window_s = settings.anomaly_auth_window_s
        # An aggregated AccessDenied stands for `count` denials from its source.
        size = max(int(getattr(event, "count", 1) or 1), 1)
        for subject, is_address in subjects:
            await self._signal(session, AUTH_FAILURE, subject, recorded, size=size)
            positions, total = await self._window(
                session, AUTH_FAILURE, subject, recorded, window_s
            )
            found.append(
                rules.repeated_auth_failures(
                    subject=subject,
                    positions=positions,
                    count=total,
                    threshold=(
                        settings.anomaly_auth_failures_per_address
                        if is_address
                        else settings.anomaly_auth_failures_per_account
                    ),
                    window_s=window_s,
                )
            )
        return found

    async def _audit_read(self, session: AsyncSession, recorded: RecordedEvent) -> Finding | None:
        settings = self._settings
        size = rules.audit_read_size(recorded.payload)
        actor = _actor_id(recorded)
        if size is None or actor is None:
            log.debug("audit_read_unreadable", position=recorded.position)
            return None
        subject = rules.user_subject(actor)
        if recorded.event_type == "AuditExported":
            previous = list(
                (
                    await session.scalars(
                        select(DetectorSignalRow.size)
                        .where(
                            DetectorSignalRow.kind == EXPORT, DetectorSignalRow.subject == subject
                        )
                        .order_by(DetectorSignalRow.at.desc(), DetectorSignalRow.id.desc())
                        .limit(settings.anomaly_export_history)
                    )
                ).all()
            )
            await self._signal(session, EXPORT, subject, recorded, size=size)
            return rules.large_export(
                actor_id=actor,
                event_count=size,
                position=recorded.position,
                previous_counts=previous,
                floor=settings.anomaly_export_floor,
                factor=settings.anomaly_audit_read_factor,
            )
        window_s = settings.anomaly_audit_window_s
        await self._signal(session, AUDIT_VIEW, subject, recorded, size=size)
        positions, total = await self._window(session, AUDIT_VIEW, subject, recorded, window_s)
        if total <= settings.anomaly_audit_read_floor:
            return None
        return rules.audit_read_burst(
            actor_id=actor,
            window_items=total,
            window_positions=positions,
            baseline_window_totals=await self._baseline(
                session, AUDIT_VIEW, subject, recorded.recorded_at, window_s
            ),
            floor=settings.anomaly_audit_read_floor,
            factor=settings.anomaly_audit_read_factor,
            window_s=window_s,
        )

    async def _signal(
        self,
        session: AsyncSession,
        kind: str,
        subject: str,
        recorded: RecordedEvent,
        *,
        size: int = 1,
    ) -> None:
        await session.execute(
            insert(DetectorSignalRow).values(
                kind=kind,
                subject=subject,
                position=recorded.position,
                at=recorded.recorded_at,
                size=size,
            )
        )

    async def _window(
        self, session: AsyncSession, kind: str, subject: str, recorded: RecordedEvent, window_s: int
    ) -> tuple[list[int], int]:
        """Positions and summed sizes of the subject's signals in (at - window, at]."""
        at = recorded.recorded_at
        rows = (
            await session.execute(
                select(_SIGNALS.c.position, _SIGNALS.c.size)
                .where(
                    _SIGNALS.c.kind == kind,
                    _SIGNALS.c.subject == subject,
                    _SIGNALS.c.at > at - timedelta(seconds=window_s),
                    _SIGNALS.c.at <= at,
                )
                .order_by(_SIGNALS.c.position)
            )
        ).all()
        return [row.position for row in rows], sum(row.size for row in rows)

    async def _baseline(
        self, session: AsyncSession, kind: str, subject: str, at: datetime, window_s: int
    ) -> list[int]:
        """The subject's totals per earlier window over the baseline days (active ones only)."""
        window_start = at - timedelta(seconds=window_s)
        since = at - timedelta(days=self._settings.anomaly_baseline_days)
        result = await session.execute(
            _BASELINE,
            {
                "kind": kind,
                "subject": subject,
                "since": since,
                "window_start": window_start,
                "at": at,
                "window_s": window_s,
            },
        )
        return [int(row.total) for row in result]

    async def _raise(
        self, session: AsyncSession, recorded: RecordedEvent, finding: Finding
    ) -> None:
        at = recorded.recorded_at
        previous = await session.get(DetectorRaisedRow, (finding.rule.value, finding.subject))
        quiet = timedelta(seconds=self._settings.anomaly_redetect_after_s)
        if previous is not None and at - previous.last_raised_at < quiet:
            previous.suppressed += 1
            await session.flush()
            log.debug(
                "anomaly_held_back",
                rule=finding.rule.value,
                subject=finding.subject,
                position=recorded.position,
                last_anomaly_id=str(previous.last_anomaly_id),
            )
            return
        summary = finding.summary
        if previous is not None and previous.suppressed:
            summary += (
                f"; {previous.suppressed} similar finding(s) were held back after the "
                f"previous anomaly {previous.last_anomaly_id}"
            )
        anomaly_id = uuid7()
        self._pending.append(
            (
                recorded.position,
                anomaly_stream(anomaly_id),
                AnomalyDetected(
                    anomaly_id=anomaly_id,
                    rule=finding.rule.value,
                    severity=finding.severity.value,
                    subject=finding.subject,
                    summary=summary,
                    evidence_positions=finding.evidence_positions,
                ),
                EventMetadata(
                    actor_id="system:anomaly_detector",
                    actor_role="system",
                    correlation_id=recorded.metadata.get("correlation_id"),
                    causation_id=str(recorded.event_id),
                ),
            )
        )
        statement = insert(DetectorRaisedRow).values(
            rule=finding.rule.value,
            subject=finding.subject,
            last_raised_at=at,
            last_anomaly_id=anomaly_id,
            suppressed=0,
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[DetectorRaisedRow.rule, DetectorRaisedRow.subject],
                set_={
                    "last_raised_at": statement.excluded.last_raised_at,
                    "last_anomaly_id": statement.excluded.last_anomaly_id,
                    "suppressed": 0,
                },
            )
        )
        if previous is not None:
            # The ORM copy is stale after the upsert; drop it so a later get re-reads.
            session.expunge(previous)
        log.info(
            "anomaly_detected",
            anomaly_id=str(anomaly_id),
            rule=finding.rule.value,
            severity=finding.severity.value,
            subject=finding.subject,
            position=recorded.position,
        )

    async def _prune(self, session: AsyncSession, newest: datetime) -> None:
        settings = self._settings
        longest_s = max(
            settings.anomaly_baseline_days * 86_400,
            settings.anomaly_auth_window_s,
            settings.anomaly_audit_window_s,
            settings.anomaly_question_window_s,
        )
        await session.execute(
            delete(DetectorSignalRow).where(
                or_(
                    (DetectorSignalRow.kind != EXPORT)
                    & (DetectorSignalRow.at < newest - timedelta(seconds=longest_s)),
                    DetectorSignalRow.at < newest - timedelta(days=EXPORT_HISTORY_DAYS),
                )
            )
        )


def _actor_id(recorded: RecordedEvent) -> str | None:
    """Who read or exported: the event's actor, else a payload field naming them."""
    actor = recorded.metadata.get("actor_id")
    if isinstance(actor, str) and actor:
        return actor
    payload: dict[str, Any] = recorded.payload
    for key in ("actor_id", "auditor_id", "user_id", "viewed_by", "exported_by"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return None
