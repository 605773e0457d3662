"""Abuse of public and cheap routes: the ledger stays bounded, searches are limited,
`serve --workers N` warns about per-process limits, and refusals say what was wrong."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ragledger.api.app import create_app
from ragledger.core.settings import Settings
from ragledger.events import store
from tests.e2e.conftest import login, make_account

BOGUS = {"Authorization": "Bearer not-a-jwt"}


@asynccontextmanager
async def running(
    settings: Settings, client_ip: str = "203.0.113.9"
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=(client_ip, 1)), base_url="http://t"
        ) as client,
    ):
        yield app, client


async def _payloads(db, event_type: str) -> list[dict]:
    async with db.sessionmaker() as session:
        events = await store.read_all(session, event_types={event_type}, limit=10_000)
    return [e.payload for e in events]


async def _wait_for_count(db, event_type: str, total: int) -> list[dict]:
    """The events of `event_type` once their counts add up to `total` (waits, never times)."""
    deadline = time.monotonic() + 60
    while True:
        payloads = await _payloads(db, event_type)
        if sum(p["count"] for p in payloads) >= total or time.monotonic() > deadline:
            return payloads
        await asyncio.sleep(0.1)


# Long enough for a burst of 50 requests on a busy machine, short enough to wait for.
WINDOW_S = 6


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_bogus_tokens_are_recorded_once_per_source_and_window(db, settings, backend) -> None:
    """50 requests with bogus tokens: one event at once, then one with the rest's count."""
    tuned = settings.model_copy(
        update={
            "security_event_window_s": WINDOW_S,
            "redis_url": settings.redis_url if backend == "redis" else None,
        }
    )
    async with running(tuned) as (_app, client):
        statuses = [
            (await client.get("/api/v1/users/me", headers=BOGUS)).status_code for _ in range(50)
        ]
        assert set(statuses) == {401}
        first = await _payloads(db, "AccessDenied")
        assert [(p["reason"], p["count"]) for p in first] == [("token_malformed", 1)]
        # The window's end is recorded by the app's periodic flush, with the count.
        denied = await _wait_for_count(db, "AccessDenied", 50)
    assert [p["count"] for p in denied] == [1, 49]
    assert {p["path"] for p in denied} == {"/api/v1/users/me"}


async def test_the_window_is_shared_by_processes_through_redis(db, settings) -> None:
    """Two apps on one Redis (two processes): the second's denials join the first's window."""
    tuned = settings.model_copy(update={"security_event_window_s": WINDOW_S})
    async with running(tuned) as (_a, first), running(tuned) as (_b, second):
        for client in (first, second, first, second):
            assert (await client.get("/api/v1/users/me", headers=BOGUS)).status_code == 401
        assert [p["count"] for p in await _payloads(db, "AccessDenied")] == [1]
        # Either process records the count when the window ends, exactly once.
        denied = await _wait_for_count(db, "AccessDenied", 4)
        await asyncio.sleep(WINDOW_S / 2)  # a second flush would have run by now
        assert [p["count"] for p in await _payloads(db, "AccessDenied")] == [1, 3]
    assert [p["count"] for p in denied] == [1, 3]


async def test_rate_limit_refusals_are_bounded_too(db, settings) -> None:
    tight = settings.model_copy(update={"rate_limit_login_per_address": "2/minute"})
    async with running(tight) as (_app, client):
        form = {"username": "who@example.com", "password": "p" * 12}
        statuses = [
            (await client.post("/api/v1/auth/jwt/login", data=form)).status_code for _ in range(32)
        ]
        assert statuses == [400, 400] + [429] * 30
        refused = await _payloads(db, "RateLimitExceeded")
        assert [(p["scope"], p["count"]) for p in refused] == [("login_address", 1)]
    # At shutdown (one process, or no Redis) what the window held is recorded... in
    # Redis it waits for the next flush; in memory the process records it as it stops.
    memory = tight.model_copy(update={"redis_url": None})
    async with running(memory) as (_app, client):
        for _ in range(12):
            await client.post("/api/v1/auth/jwt/login", data=form)
    refused = await _payloads(db, "RateLimitExceeded")
    assert [p["count"] for p in refused] == [1, 1, 9]


async def test_attacker_chosen_text_is_capped(db, settings) -> None:
    async with running(settings) as (_app, client):
        response = await client.get(
            "/api/v1/answers/" + "a" * 5000,
            headers={**BOGUS, "User-Agent": "u" * 5000},
        )
        assert response.status_code == 401
    async with db.sessionmaker() as session:
        [event] = await store.read_all(session, event_types={"AccessDenied"}, limit=10)
    assert len(event.payload["path"]) == 256
    assert event.payload["path"].startswith("/api/v1/answers/aaaa")
    assert len(event.metadata["user_agent"]) == 256


async def test_search_is_rate_limited_per_user(db, settings, fake_openai, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    tuned = settings.model_copy(
        update={
            "rate_limit_search_per_user": "2/minute",
            "embedding_model": "openai/fake-embed",
            "embedding_api_base": fake_openai.base_url,
        }
    )
    emma = await make_account(db, "emma@example.com", "employee", ("hr",))
    ivan = await make_account(db, "ivan@example.com", "employee", ("hr",))
    async with running(tuned) as (_app, client):
        await login(client, emma)
        await login(client, ivan)
        body = {"query": "annual leave"}
        statuses = [
            (await client.post("/api/v1/search", headers=emma.headers, json=body)).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        limited = await client.post("/api/v1/search", headers=emma.headers, json=body)
        assert limited.status_code == 429
        assert limited.json()["detail"].startswith("rate limit exceeded")
        assert int(limited.headers["retry-after"]) >= 1
        # Another account is not affected.
        other = await client.post("/api/v1/search", headers=ivan.headers, json=body)
        assert other.status_code == 200
    assert len(await _payloads(db, "SearchPerformed")) == 3
    [refused] = await _payloads(db, "RateLimitExceeded")
    assert (refused["scope"], refused["user_id"]) == ("search", str(emma.id))


async def test_a_password_with_the_email_name_says_which_rule(client, accounts) -> None:
    response = await client.post(
        "/api/v1/admin/users",
        headers=accounts["admin"].headers,
        json={"email": "margaret@example.com", "password": "margaret-loves-long-passwords"},
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": "password must not contain the part of your email address before the @"
    }


RAGLEDGER = str(Path(sys.executable).parent / "ragledger")


async def _serve_output(pg_admin_url: str, tmp_path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        LOG_FORMAT="json",
        LLM_WARM_UP="false",
        # Never migrated, so `serve` stops right after its start-up checks.
        DATABASE_URL=pg_admin_url,
        RAGLEDGER_DATA_DIR=str(tmp_path),
        **extra,
    )
    process = await asyncio.create_subprocess_exec(
        RAGLEDGER,
        "serve",
        "--workers",
        "2",
        "--port",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode != 0
    return output.decode()


async def test_serve_with_workers_and_no_redis_warns(pg_admin_url: str, tmp_path: Path) -> None:
    alone = await _serve_output(pg_admin_url, tmp_path / "a")
    assert '"event": "rate_limits_per_process"' in alone
    assert '"level": "warning"' in alone
    shared = await _serve_output(
        pg_admin_url, tmp_path / "b", REDIS_URL="redis://127.0.0.1:6379/15"
    )
    assert "rate_limits_per_process" not in shared
