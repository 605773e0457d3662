"""A projection stuck on a poisoned event raises one anomaly, and admins are mailed once."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.projections.notifier import NotifierReactor
from ragledger.projections.runner import RunnerConfig, SubscriberRunner, run_until_caught_up
from ragledger.projections.subscriber_alerts import (
    RULE,
    AlertThresholds,
    report_stuck_subscribers,
)
from ragledger.services import users as users_service
from tests.fakes.smtp_server import FakeSMTPServer
from tests.integration.projections.support import (
    RecordingProjection,
    append_numbered,
    create_effects_table,
)

FAST = RunnerConfig(
    batch_size=7,
    poll_interval_s=0.2,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    standby_retry_s=0.1,
)
LIMITS = AlertThresholds(failure_count=3, lag_events=5, stall_s=3600)


async def _checkpoint(db, name: str) -> SubscriberCheckpoint | None:
    async with db.sessionmaker() as session:
        return await session.get(SubscriberCheckpoint, name)


async def test_a_failing_projection_is_reported_once_and_mailed(db, settings) -> None:
    await create_effects_table(db.owner_engine)
    async with db.sessionmaker() as session, session.begin():
        await users_service.create_user(
            session,
            email="adam@example.com",
            password="correct horse battery staple",
            role="admin",
            groups=(),
            password_min_length=12,
            actor_id=None,
            via="cli",
            metadata=EventMetadata(actor_id="cli:test"),
        )
    await append_numbered(db.sessionmaker, 10)
    async with db.sessionmaker() as session:
        poisoned = (await store.head(session)).position - 5
    runner = SubscriberRunner(db.engine, [RecordingProjection(fail_at=poisoned)], FAST)
    task = asyncio.create_task(runner.run())
    try:
        deadline = asyncio.get_running_loop().time() + 300
        while True:
            checkpoint = await _checkpoint(db, "recording")
            if checkpoint is not None and checkpoint.failures >= LIMITS.failure_count:
                break
            assert asyncio.get_running_loop().time() < deadline, "no failures recorded"
            await asyncio.sleep(0.05)
        # Two processes watching at the same moment, then again later: one anomaly.
        first, second = await asyncio.gather(
            report_stuck_subscribers(db.sessionmaker, LIMITS),
            report_stuck_subscribers(db.sessionmaker, LIMITS),
        )
        again = await report_stuck_subscribers(db.sessionmaker, LIMITS)
    finally:
        runner.stop()
        await task
    reported = [i for i in [*first, *second] if i.subscriber == "recording"]
    assert len(reported) == 1
    assert (reported[0].kind, reported[0].position) == ("failing", poisoned)
    assert [i for i in again if i.subscriber == "recording"] == []

    async with db.sessionmaker() as session:
        detected = await store.read_all(session, event_types={"AnomalyDetected"})
    [anomaly] = [e for e in detected if e.payload["subject"] == "subscriber:recording"]
    assert anomaly.payload["rule"] == RULE
    assert anomaly.payload["evidence_positions"] == [poisoned]
    assert f"at position {poisoned}" in anomaly.payload["summary"]

    # The notifier mails admins about it like any anomaly.
    with FakeSMTPServer() as smtp:
        mail_settings = settings.model_copy(update=smtp.mail_settings())
        assert await run_until_caught_up(db.engine, NotifierReactor(mail_settings))
        assert await run_until_caught_up(db.engine, NotifierReactor(mail_settings))
        mails = [
            m
            for m in smtp.messages
            if m.header("X-Ragledger-Anomaly-Id") == anomaly.payload["anomaly_id"]
        ]
    assert len(mails) == 1
    assert list(mails[0].rcpt_tos) == ["adam@example.com"]
    assert RULE in mails[0].text


async def test_a_stalled_subscriber_far_behind_is_reported(db) -> None:
    await append_numbered(db.sessionmaker, 10)
    async with db.owner_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO subscriber_checkpoints (name, position, failures, updated_at) "
                "VALUES ('stalled', 1, 0, now() - interval '2 hours')"
            )
        )
    [incident] = [
        i
        for i in await report_stuck_subscribers(db.sessionmaker, LIMITS)
        if i.subscriber == "stalled"
    ]
    assert (incident.kind, incident.position) == ("stalled", 1)
    assert [
        i
        for i in await report_stuck_subscribers(db.sessionmaker, LIMITS)
        if i.subscriber == "stalled"
    ] == []
