"""Sessions over HTTP: what ends a token, and what a Redis outage or data loss changes
(nothing that matters: revocation lives in PostgreSQL, limits fall back per process)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from ragledger.api.app import create_app
from ragledger.core.settings import Settings
from ragledger.events import store
from tests.e2e.conftest import PASSWORD, login, make_account

ME = "/api/v1/users/me"


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=("203.0.113.30", 1)), base_url="http://t"
        ) as client,
    ):
        yield app, client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _denials(db) -> list[str]:
    async with db.sessionmaker() as session:
        events = await store.read_all(session, event_types={"AccessDenied"}, limit=10_000)
    return [e.payload["reason"] for e in events]


async def test_reactivation_does_not_revive_old_tokens(db, client, accounts) -> None:
    employee, admin = accounts["employee"], accounts["admin"]
    old_token = employee.token
    path = f"/api/v1/admin/users/{employee.id}"
    assert (await client.post(f"{path}/deactivate", headers=admin.headers)).status_code == 200
    reactivated = await client.patch(path, headers=admin.headers, json={"is_active": True})
    assert reactivated.status_code == 200, reactivated.text
    refused = await client.get(ME, headers=_bearer(old_token))
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("token no longer valid")
    # A login after the reactivation works.
    await login(client, employee)
    assert (await client.get(ME, headers=employee.headers)).status_code == 200
    assert (await _denials(db))[-1] == "token_superseded"


async def test_a_logged_out_token_stays_refused_when_redis_loses_its_data(db, settings) -> None:
    emma = await make_account(db, "emma@example.com", "employee")
    async with running(settings) as (_app, client):
        token = await login(client, emma)
        assert (
            await client.post("/api/v1/auth/jwt/logout", headers=emma.headers)
        ).status_code == 204
        # As after a restart without persistence: every key of this deployment is gone.
        redis = Redis.from_url(settings.redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"{settings.redis_key_prefix}*")]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()
        refused = await client.get(ME, headers=_bearer(token))
        assert (refused.status_code, refused.json()) == (401, {"detail": "token revoked"})
    # Another process (a fresh app on the same database) refuses it too.
    async with running(settings) as (_app, other):
        again = await other.get(ME, headers=_bearer(token))
        assert (again.status_code, again.json()) == (401, {"detail": "token revoked"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server without persistence, which a test may stop and start again."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


async def test_with_redis_down_limits_hold_and_nothing_is_a_500(
    db, settings, redis_server: RedisServer
) -> None:
    emma = await make_account(db, "emma@example.com", "employee")
    tuned = settings.model_copy(
        update={"redis_url": redis_server.url, "rate_limit_login_per_account": "3/15minute"}
    )
    async with running(tuned) as (_app, client):
        token = await login(client, emma)
        redis_server.stop()

        # Signed-in requests never needed Redis.
        me = await client.get(ME, headers=_bearer(token))
        assert (me.status_code, me.json()["email"]) == (200, "emma@example.com")
        # Login limits still apply, counted in this process (from zero: what Redis
        # counted before the outage is out of reach).
        form = {"username": emma.email, "password": "wrong password!"}
        statuses = [
            (await client.post("/api/v1/auth/jwt/login", data=form)).status_code for _ in range(4)
        ]
        assert statuses == [400, 400, 400, 429]
        limited = await client.post(
            "/api/v1/auth/jwt/login", data={"username": emma.email, "password": PASSWORD}
        )
        assert limited.status_code == 429
        assert limited.json()["detail"].startswith("rate limit exceeded")
        # Public routes and denials keep working and keep being recorded.
        forgot = await client.post("/api/v1/auth/forgot-password", json={"email": emma.email})
        assert forgot.status_code == 202
        bogus = await client.get(ME, headers=_bearer("not-a-jwt"))
        assert bogus.status_code == 401
        # A logout while Redis is down holds, and holds after Redis comes back empty.
        assert (
            await client.post("/api/v1/auth/jwt/logout", headers=_bearer(token))
        ).status_code == 204
        assert (await client.get(ME, headers=_bearer(token))).status_code == 401
        redis_server.start()
        refused = await client.get(ME, headers=_bearer(token))
        assert (refused.status_code, refused.json()) == (401, {"detail": "token revoked"})
    reasons = await _denials(db)
    assert "token_malformed" in reasons
    assert "token_revoked" in reasons


async def test_an_app_started_while_redis_is_down_still_limits_logins(db, settings) -> None:
    """REDIS_URL names a port nothing listens on: the app starts, limits hold per process."""
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    emma = await make_account(db, "emma@example.com", "employee")
    tuned = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{dead_port}/0",
            "rate_limit_login_per_address": "3/minute",
        }
    )
    async with running(tuned) as (_app, client):
        token = await login(client, emma)
        assert (await client.get(ME, headers=_bearer(token))).status_code == 200
        form = {"username": "who@example.com", "password": "p" * 12}
        statuses = [
            (await client.post("/api/v1/auth/jwt/login", data=form)).status_code for _ in range(3)
        ]
        assert statuses == [400, 400, 429]


async def test_a_redis_failure_without_fallback_is_a_json_503() -> None:
    """The last line: a Redis error no fallback caught is 503 with a JSON body, not 500."""
    from fastapi import FastAPI as _FastAPI
    from redis.exceptions import ConnectionError as RedisConnectionError

    from ragledger.api.errors import install_error_handlers

    app = _FastAPI()
    install_error_handlers(app)

    @app.get("/needs-redis")
    async def needs_redis() -> None:
        raise RedisConnectionError("Connection refused")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        response = await client.get("/needs-redis")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "a backing service is unavailable; try again shortly"}
    assert response.headers["retry-after"] == "5"
