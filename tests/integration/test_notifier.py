"""The notifier against a real SMTP server on loopback: once per anomaly, retries, grouping.

The mail goes through fastapi-mail and aiosmtplib over a socket to aiosmtpd
(tests/fakes/smtp_server.py), which records what it accepted or refuses on demand.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, update

from ragledger.core.ids import uuid7
from ragledger.events import store
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.events.oversight import AnomalyDetected, anomaly_stream
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.models.oversight import NotifierAttemptRow
from ragledger.models.users import User
from ragledger.projections.notifier import NotifierReactor
from ragledger.projections.runner import RunnerConfig, SubscriberRunner, run_until_caught_up
from ragledger.projections.subscriber import HandlerError
from ragledger.services import users as users_service
from tests.fakes.smtp_server import FakeSMTPServer

PASSWORD = "correct horse battery staple"
ADMINS = ["adam@example.com", "ada@example.com"]


async def _account(db, email: str, role: str, *, active: bool = True) -> uuid.UUID:
    async with db.sessionmaker() as session, session.begin():
        view = await users_service.create_user(
            session,
            email=email,
            password=PASSWORD,
            role=role,
            groups=(),
            password_min_length=12,
            actor_id=None,
            via="cli",
            metadata=EventMetadata(actor_id="cli:test"),
        )
        if not active:
            await users_service.update_user(
                session, user_id=view.id, is_active=False, actor_id=None, metadata=EventMetadata()
            )
    return view.id


@pytest.fixture
async def people(db) -> None:
    """Two active admins, one deactivated admin and an employee (who get no mail)."""
    for email in ADMINS:
        await _account(db, email, "admin")
    await _account(db, "old-admin@example.com", "admin", active=False)
    await _account(db, "emma@example.com", "employee")


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    """A running SMTP server on loopback, stopped after the test."""
    with FakeSMTPServer() as server:
        yield server


@pytest.fixture
def smtp_settings(settings, smtp: FakeSMTPServer):
    return settings.model_copy(
        update={**smtp.mail_settings(), "public_base_url": "https://rl.example.com"}
    )


async def _detect(db, *specs: tuple[str, str]) -> list[uuid.UUID]:
    """Append one AnomalyDetected per (rule, subject), all in one transaction."""
    ids = []
    async with db.sessionmaker() as session, session.begin():
        for rule, subject in specs:
            anomaly_id = uuid7()
            ids.append(anomaly_id)
            await store.append(
                session,
                anomaly_stream(anomaly_id),
                [
                    AnomalyDetected(
                        anomaly_id=anomaly_id,
                        rule=rule,
                        severity="high",
                        subject=subject,
                        summary=f"{rule} about {subject}",
                        evidence_positions=(1, 2),
                    )
                ],
                expected_version=store.NO_STREAM,
            )
    return ids


async def _events(db, event_type: str) -> list[RecordedEvent]:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={event_type}, limit=10_000)


async def _notified(db) -> dict[str, list[dict]]:
    """AnomalyNotified payloads by anomaly id."""
    found: dict[str, list[dict]] = {}
    for event in await _events(db, "AnomalyNotified"):
        found.setdefault(event.payload["anomaly_id"], []).append(event.payload)
    return found


def _mails_for(smtp: FakeSMTPServer, anomaly_id: uuid.UUID) -> list:
    return [m for m in smtp.messages if m.header("X-Ragledger-Anomaly-Id") == str(anomaly_id)]


async def _run(db, settings, notifier: NotifierReactor | None = None) -> None:
    assert await run_until_caught_up(db.engine, notifier or NotifierReactor(settings))


async def test_each_anomaly_is_mailed_once_across_restarts(
    db, people, smtp_settings, smtp: FakeSMTPServer
) -> None:
    ids = await _detect(
        db,
        ("repeated_auth_failures", "address:203.0.113.7"),
        ("question_rate", "user:1"),
        ("prompt_injection", "document:9"),
    )
    await _run(db, smtp_settings)
    assert len(smtp.messages) == 3
    for anomaly_id in ids:
        (mail,) = _mails_for(smtp, anomaly_id)
        assert sorted(mail.rcpt_tos) == sorted(ADMINS)
        assert mail.mail_from == "ragledger@example.com"
        assert "What happened:" in mail.text
        assert "Severity:      high" in mail.text
        assert "https://rl.example.com/api/v1/audit/events?position_from=1" in mail.text
        assert "https://rl.example.com/api/v1/admin/anomalies?rule=" in mail.text
        assert "<h2>ragledger: HIGH anomaly</h2>" in mail.html
        assert mail.header("X-Ragledger-Possible-Duplicate") is None

    # A restart (a fresh reactor, as a new process would build) sends nothing again.
    await _run(db, smtp_settings)
    assert len(smtp.messages) == 3
    notified = await _notified(db)
    assert {uuid.UUID(k) for k in notified} == set(ids)
    for payloads in notified.values():
        assert len(payloads) == 1
        assert payloads[0]["transport"] == "smtp"
        assert payloads[0]["recipients"] == 2
        assert payloads[0]["possible_duplicate"] is False

    # Even with its checkpoint moved back by hand, the ledger stops a second mail.
    async with db.owner_engine.begin() as conn:
        await conn.execute(
            update(SubscriberCheckpoint)
            .where(SubscriberCheckpoint.name == "notifier")
            .values(position=0)
        )
    await _run(db, smtp_settings)
    assert len(smtp.messages) == 3
    assert all(len(p) == 1 for p in (await _notified(db)).values())

    # New anomalies still go out, once.
    (later,) = await _detect(db, ("uncited_answer", "model:m"))
    await _run(db, smtp_settings)
    assert len(_mails_for(smtp, later)) == 1
    assert len(smtp.messages) == 4


@pytest.mark.parametrize(
    "fault",
    ["refuse_data_451", "refuse_rcpt_550", "down"],
)
async def test_a_failed_send_leaves_the_anomaly_unsent_until_the_server_recovers(
    db,
    people,
    smtp_settings,
    smtp: FakeSMTPServer,
    fault: str,
) -> None:
    (anomaly_id,) = await _detect(db, ("repeated_auth_failures", "user:1"))
    if fault == "refuse_data_451":
        smtp.refuse(451)
    elif fault == "refuse_rcpt_550":
        smtp.refuse(550, at="rcpt")
    else:
        smtp.stop()

    for _ in range(2):
        with pytest.raises(HandlerError):
            await _run(db, smtp_settings)
    assert smtp.messages == []
    assert await _notified(db) == {}
    # The ledger says so, once, however often it is retried.
    (failed,) = await _events(db, "AnomalyNotificationFailed")
    assert failed.payload["anomaly_id"] == str(anomaly_id)
    assert failed.payload["attempt"] == 1
    assert failed.payload["error"]
    async with db.sessionmaker() as session:
        checkpoint = await session.get(SubscriberCheckpoint, "notifier")
        attempt = await session.get(NotifierAttemptRow, anomaly_id)
    assert checkpoint is None or checkpoint.position < failed.position
    assert attempt is not None
    assert attempt.state == "failed"
    assert attempt.attempts == 2

    if fault == "down":
        smtp.start()
    smtp.accept()
    await _run(db, smtp_settings)
    (mail,) = smtp.messages
    assert mail.header("X-Ragledger-Anomaly-Id") == str(anomaly_id)
    # A refused attempt was never delivered: the mail that goes out is not a duplicate.
    assert not mail.subject.startswith("[possible duplicate]")
    ((payload,),) = (await _notified(db)).values()
    assert payload["transport"] == "smtp"
    assert payload["possible_duplicate"] is False
    async with db.sessionmaker() as session:
        assert await session.get(NotifierAttemptRow, anomaly_id) is None


async def _eventually(check: Callable[[], object], within_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():  # type: ignore[misc]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_the_runner_retries_with_backoff_and_delivers_once_the_server_is_back(
    db, people, smtp_settings, smtp: FakeSMTPServer
) -> None:
    smtp.stop()
    (anomaly_id,) = await _detect(db, ("question_rate", "user:7"))
    config = RunnerConfig(poll_interval_s=0.2, backoff_initial_s=0.05, backoff_max_s=0.2)
    runner = SubscriberRunner(db.engine, [NotifierReactor(smtp_settings)], config)
    task = asyncio.create_task(runner.run())
    try:

        async def failed_twice() -> bool:
            async with db.sessionmaker() as session:
                row = await session.get(SubscriberCheckpoint, "notifier")
                return row is not None and row.failures >= 2

        await _eventually(failed_twice)
        assert await _notified(db) == {}
        smtp.start()

        async def delivered() -> bool:
            return bool(await _notified(db))

        await _eventually(delivered)
    finally:
        runner.stop()
        await task
    assert len(_mails_for(smtp, anomaly_id)) == 1
    async with db.sessionmaker() as session:
        row = await session.get(SubscriberCheckpoint, "notifier")
    assert row is not None
    assert row.failures == 0
    assert row.last_error is None


class SimulatedCrashError(Exception):
    """The process 'dies' after the server accepted the mail, before the commit."""


class CrashAfterSend(NotifierReactor):
    """Sends, appends AnomalyNotified, then fails before the transaction commits."""

    async def handle(self, session, recorded) -> None:
        await super().handle(session, recorded)
        raise SimulatedCrashError


async def test_a_crash_between_send_and_commit_is_sent_again_marked_possible_duplicate(
    db, people, smtp_settings, smtp: FakeSMTPServer
) -> None:
    (anomaly_id,) = await _detect(db, ("ledger_verification_failed", "ledger"))
    with pytest.raises(HandlerError):
        await _run(db, smtp_settings, CrashAfterSend(smtp_settings))
    assert len(smtp.messages) == 1
    assert await _notified(db) == {}  # rolled back with the checkpoint
    async with db.sessionmaker() as session:
        attempt = await session.get(NotifierAttemptRow, anomaly_id)
    assert attempt is not None
    assert attempt.state == "sending"

    # After the "restart": the one case where a second mail goes out (at-least-once),
    # and it says so, with the same anomaly id for mail filters to drop it.
    await _run(db, smtp_settings)
    first, second = _mails_for(smtp, anomaly_id)
    assert not first.subject.startswith("[possible duplicate]")
    assert second.subject.startswith("[possible duplicate]")
    assert second.header("X-Ragledger-Possible-Duplicate") == "yes"
    ((payload,),) = (await _notified(db)).values()
    assert payload["possible_duplicate"] is True

    # From here on, the guarantee holds again.
    await _run(db, smtp_settings)
    assert len(smtp.messages) == 2


async def test_bursts_are_grouped_into_one_mail_per_rule_and_subject_per_window(
    db, people, smtp_settings, smtp: FakeSMTPServer
) -> None:
    settings = smtp_settings.model_copy(update={"notifier_group_window_s": 2})
    burst = ("repeated_auth_failures", "address:198.51.100.9")
    first, second, third, other = await _detect(
        db, burst, burst, burst, ("repeated_auth_failures", "address:198.51.100.10")
    )
    await _run(db, settings)
    assert len(smtp.messages) == 2
    assert len(_mails_for(smtp, first)) == 1
    assert len(_mails_for(smtp, other)) == 1
    notified = await _notified(db)
    for grouped in (second, third):
        (payload,) = notified[str(grouped)]
        assert payload["transport"] == "grouped"
        assert payload["grouped_into"] == str(first)
        assert payload["recipients"] == 0

    await asyncio.sleep(2.1)
    (after,) = await _detect(db, burst)
    await _run(db, settings)
    (mail,) = _mails_for(smtp, after)
    assert mail.subject.endswith("+2 grouped")
    assert "2 more anomalies of this rule and subject" in mail.text
    (payload,) = (await _notified(db))[str(after)]
    assert payload["grouped_count"] == 2
    assert payload["transport"] == "smtp"


async def test_without_a_mail_server_the_mail_is_logged_and_recorded(db, people, settings) -> None:
    (anomaly_id,) = await _detect(db, ("uncited_answer", "model:m"))
    await _run(db, settings)
    ((payload,),) = (await _notified(db)).values()
    assert payload["anomaly_id"] == str(anomaly_id)
    assert payload["transport"] == "log"
    assert payload["recipients"] == 2


async def test_without_an_active_admin_the_anomaly_is_recorded_as_unmailed(
    db, smtp_settings, smtp: FakeSMTPServer
) -> None:
    await _account(db, "emma@example.com", "employee")
    await _detect(db, ("uncited_answer", "model:m"))
    await _run(db, smtp_settings)
    assert smtp.messages == []
    ((payload,),) = (await _notified(db)).values()
    assert payload["transport"] == "none"
    assert payload["recipients"] == 0


async def test_admin_emails_are_read_at_send_time(db, people, smtp_settings, smtp) -> None:
    await _detect(db, ("uncited_answer", "model:m"))
    await _run(db, smtp_settings)
    async with db.sessionmaker() as session:
        emails = set((await session.scalars(select(User.email).where(User.role == "admin"))).all())
    assert set(smtp.messages[0].rcpt_tos) == set(ADMINS) < emails
