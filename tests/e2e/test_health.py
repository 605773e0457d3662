"""The HTTP app over its real lifespan: health, request ids, schema checks."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from ragledger.api.app import create_app
from ragledger.core.migrations import SchemaBehindError
from ragledger.core.runtime import open_database
from ragledger.events import store
from ragledger.events.envelope import NewEvent
from tests.e2e.conftest import login, make_account


async def test_health_reports_head_and_subscriber_lag_to_auditors_only(settings, db) -> None:
    accounts = {
        role: await make_account(db, f"{role}@example.com", role)
        for role in ("employee", "auditor", "admin")
    }
    async with db.sessionmaker() as session:
        head = (await store.head(session)).position
    async with db.sessionmaker() as session, session.begin():
        await store.append(session, "s-1", [NewEvent("A", {}), NewEvent("B", {})])
    app = create_app(settings, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        for account in accounts.values():
            await login(client, account)
        anonymous = await client.get("/api/v1/health", headers={"X-Request-ID": "req-42"})
        employee = await client.get("/api/v1/health", headers=accounts["employee"].headers)
        bogus = await client.get("/api/v1/health", headers={"Authorization": "Bearer nope"})
        response = await client.get("/api/v1/health", headers=accounts["auditor"].headers)
        admin = await client.get("/api/v1/health", headers=accounts["admin"].headers)
    assert anonymous.status_code == 200
    assert anonymous.headers["x-request-id"] == "req-42"
    # The public sees the status only: no ledger head, no positions, no error texts.
    assert anonymous.json() == {"status": "ok"}
    assert employee.json() == {"status": "ok"}
    assert (bogus.status_code, bogus.json()) == (200, {"status": "ok"})
    assert response.status_code == 200
    body = response.json()
    assert admin.json() == body
    assert body["status"] == "ok"
    # The logins appended events too; the two appended here are on top of them.
    assert body["ledger_head"] >= head + 2
    assert body["subscribers"]["streams"] == {
        "kind": "projection",
        "position": 0,
        "lag": body["ledger_head"],
        "failing_position": None,
        "last_error": None,
    }


async def test_health_shows_subscribers_catching_up_with_the_runner(settings, db) -> None:
    auditor = await make_account(db, "aude@example.com", "auditor")
    app = create_app(settings, run_subscribers=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        await login(client, auditor)
        async with db.sessionmaker() as session, session.begin():
            await store.append(session, "s-1", [NewEvent("A", {})])
        for _ in range(100):
            body = (await client.get("/api/v1/health", headers=auditor.headers)).json()
            if body["subscribers"]["streams"]["lag"] == 0:
                break
            await __import__("asyncio").sleep(0.05)
    # The account and the login are events, and the runner's daily digest may have
    # signed (DigestSigned); the projection must have reached whatever the head is.
    assert body["ledger_head"] >= 3
    assert body["subscribers"]["streams"]["lag"] == 0
    assert body["subscribers"]["streams"]["position"] == body["ledger_head"]


async def test_a_bogus_request_id_is_replaced(settings) -> None:
    app = create_app(settings, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        response = await client.get("/api/v1/health", headers={"X-Request-ID": "bad id\n<x>"})
    assert response.headers["x-request-id"] != "bad id\n<x>"
    assert len(response.headers["x-request-id"]) == 32


async def test_unknown_route_is_404(settings) -> None:
    app = create_app(settings, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404


@pytest.fixture
async def empty_database_url(pg_admin_url: str):
    name = f"ragledger_empty_{uuid.uuid4().hex[:10]}"
    plain = make_url(pg_admin_url).set(drivername="postgresql")
    admin = await asyncpg.connect(plain.render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_app_refuses_a_schema_that_is_behind_and_names_the_fix(
    settings, empty_database_url: str
) -> None:
    behind = settings.model_copy(update={"database_url": empty_database_url})
    with pytest.raises(SchemaBehindError, match="ragledger db upgrade"):
        await open_database(behind)


async def test_auto_migrate_brings_an_empty_database_to_head(
    settings, empty_database_url: str
) -> None:
    fresh = settings.model_copy(update={"database_url": empty_database_url, "auto_migrate": True})
    database = await open_database(fresh)
    try:
        async with database.sessionmaker() as session:
            assert (await store.head(session)).position == 0
    finally:
        await database.dispose()
    # Second start: already at head, nothing to do, no error.
    database = await open_database(settings.model_copy(update={"database_url": empty_database_url}))
    await database.dispose()
