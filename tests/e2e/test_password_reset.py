"""forgot-password and reset over HTTP: answered before the work, the same for every
address, rate-limited, one mail per account per interval, no token in the logs, and a
reset ends the sessions opened before it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from ragledger.api.app import create_app
from ragledger.api.app_services import app_services
from ragledger.core.settings import Settings
from ragledger.events import store
from tests.e2e.conftest import PASSWORD, Account, login, make_account
from tests.fakes.smtp_server import FakeSMTPServer, fake_smtp  # noqa: F401
from tests.off_loop import spy_on

FORGOT = "/api/v1/auth/forgot-password"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=("203.0.113.20", 1)), base_url="http://t"
        ) as client,
    ):
        yield app, client


async def _requested(db) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={"PasswordResetRequested"}, limit=10_000)


def _comparable(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in {"date", "x-request-id"}}
    return response.status_code, response.content, headers


async def test_the_answer_comes_before_the_work_and_tells_nothing(
    db,
    settings,
    fake_smtp: FakeSMTPServer,  # noqa: F811
) -> None:
    """An existing and an unknown address get the same answer, given before any work:
    the work waits on a lock this test holds, and the answer still arrives."""
    emma = await make_account(db, "emma@example.com", "employee")
    async with running(settings.model_copy(update=fake_smtp.mail_settings())) as (app, client):
        async with db.owner_engine.connect() as holder:
            transaction = await holder.begin()
            await holder.execute(
                text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": emma.id}
            )
            known = await client.post(FORGOT, json={"email": "emma@example.com"})
            unknown = await client.post(FORGOT, json={"email": "ghost@example.com"})
            assert known.status_code == 202
            assert _comparable(known) == _comparable(unknown)
            # Answered while the account's work could not even start.
            assert await _requested(db) == []
            assert fake_smtp.messages == []
            await transaction.rollback()
        [mail] = await asyncio.to_thread(fake_smtp.wait_for, 1, 60.0)
        await app_services(app).background.wait_idle()
    assert mail.rcpt_tos == ("emma@example.com",)
    [event] = await _requested(db)
    assert event.payload == {"user_id": str(emma.id)}


async def test_one_mail_per_account_per_interval_and_rate_limits(
    db,
    settings,
    fake_smtp: FakeSMTPServer,  # noqa: F811
) -> None:
    await make_account(db, "emma@example.com", "employee")
    tuned = settings.model_copy(
        update={**fake_smtp.mail_settings(), "rate_limit_reset_request_per_account": "3/hour"}
    )
    async with running(tuned) as (app, client):
        for email in ("emma@example.com", "ghost@example.com"):
            statuses = [
                (await client.post(FORGOT, json={"email": email})).status_code for _ in range(4)
            ]
            # The limit is the same for an address with an account and one without.
            assert statuses == [202, 202, 202, 429], email
        limited = await client.post(FORGOT, json={"email": "EMMA@example.com"})
        assert limited.status_code == 429
        assert limited.json()["detail"].startswith("rate limit exceeded")
        assert int(limited.headers["retry-after"]) >= 1
        await app_services(app).background.wait_idle()
    # Three requests for the account, one mail: no mail bombing.
    assert len(fake_smtp.messages) == 1
    assert len(await _requested(db)) == 1


async def test_reset_requests_are_limited_per_client_address(db, settings) -> None:
    tuned = settings.model_copy(update={"rate_limit_reset_request_per_address": "2/hour"})
    async with running(tuned) as (app, client):
        statuses = [
            (await client.post(FORGOT, json={"email": f"u{i}@example.com"})).status_code
            for i in range(3)
        ]
        await app_services(app).background.wait_idle()
    assert statuses == [202, 202, 429]


async def test_without_smtp_the_log_names_the_mail_but_holds_no_token(db, settings, capsys) -> None:
    from ragledger.core.logging import configure_logging

    emma = await make_account(db, "emma@example.com", "employee")
    configure_logging(level="DEBUG", fmt="json")
    async with running(settings) as (app, client):
        assert (await client.post(FORGOT, json={"email": emma.email})).status_code == 202
        await app_services(app).background.wait_idle()
    captured = capsys.readouterr()
    logs = captured.out + captured.err
    [line] = [json.loads(x) for x in logs.splitlines() if "mail_logged_no_smtp" in x]
    assert line["to"] == ["emma@example.com"]
    assert line["kind"] == "password_reset"
    assert JWT.search(logs) is None, "a token reached the log"
    assert len(await _requested(db)) == 1


async def test_a_reset_ends_the_sessions_opened_before_it(
    db,
    settings,
    fake_smtp: FakeSMTPServer,  # noqa: F811
) -> None:
    emma = await make_account(db, "emma@example.com", "employee")
    async with running(settings.model_copy(update=fake_smtp.mail_settings())) as (_app, client):
        old_token = await login(client, emma)
        assert (await client.post(FORGOT, json={"email": emma.email})).status_code == 202
        [mail] = await asyncio.to_thread(fake_smtp.wait_for, 1, 60.0)
        [token] = JWT.findall(mail.text)
        new_password = "a brand new passphrase"
        reset = await client.post(
            "/api/v1/auth/reset-password", json={"token": token, "password": new_password}
        )
        assert reset.status_code == 200, reset.text
        refused = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {old_token}"}
        )
        assert refused.status_code == 401
        assert refused.json()["detail"].startswith("token no longer valid")
        # The old password is gone, the new one works, and so does its fresh token.
        old = await client.post(
            "/api/v1/auth/jwt/login", data={"username": emma.email, "password": PASSWORD}
        )
        assert old.status_code == 400
        fresh = Account(emma.id, emma.email, "employee", new_password)
        await login(client, fresh)
        assert (await client.get("/api/v1/users/me", headers=fresh.headers)).status_code == 200
        # The mailed token served once: the password it was tied to has changed.
        again = await client.post(
            "/api/v1/auth/reset-password", json={"token": token, "password": "another passphrase"}
        )
        assert again.status_code == 400
    async with db.sessionmaker() as session:
        denied = await store.read_all(session, event_types={"AccessDenied"}, limit=10)
        reset_events = await store.read_all(session, event_types={"PasswordReset"}, limit=10)
    assert [e.payload["reason"] for e in denied] == ["token_superseded"]
    assert len(reset_events) == 1


@pytest.mark.parametrize("count", [3])
async def test_the_reset_work_keeps_argon2_off_the_event_loop(
    db, settings, count, monkeypatch
) -> None:
    """The work behind forgot-password fingerprints with argon2, on a worker thread."""
    from ragledger.services.users import password_helper

    accounts = [await make_account(db, f"lena{i}@example.com", "employee") for i in range(count)]
    async with running(settings) as (app, client):
        hashes = spy_on(monkeypatch, password_helper, "hash")
        responses = await asyncio.gather(
            *(client.post(FORGOT, json={"email": a.email}) for a in accounts)
        )
        await app_services(app).background.wait_idle()
    assert [r.status_code for r in responses] == [202] * count
    assert len(await _requested(db)) == count
    # One fingerprint per account, each computed beside the loop, never on it.
    assert len(hashes.calls) == count, hashes.calls
    assert hashes.all_off_the_loop, hashes.calls
