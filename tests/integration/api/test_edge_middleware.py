"""The HTTP edge on a small app: security headers, CORS, body limits and rate limits.

Rate limits run on both backends; the Redis one uses the real server at TEST_REDIS_URL
(default redis://127.0.0.1:6379/15) under a key prefix unique to each test, and only
those keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ragledger.api.body_limit import BodyLimitMiddleware
from ragledger.api.client_address import TrustedProxies
from ragledger.api.middleware import RequestContextMiddleware
from ragledger.api.rate_limits import (
    APP_STATE_ATTRIBUTE,
    RateLimitExceededError,
    RateLimits,
    identify_by_address,
    parse_rate,
    rate_limit_exceeded_handler,
    rate_limited,
)
from ragledger.api.security_headers import (
    DOCS_CSP,
    STRICT_CSP,
    SecurityHeadersMiddleware,
    add_cors,
    docs_paths_of,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ALLOWED_ORIGIN = "https://app.example.com"
JSON_LIMIT = 1024
OTHER_LIMIT = 2048
UPLOAD_LIMIT = 4096
QUESTIONS_PER_MINUTE = 3


@dataclass
class Recorder:
    """What the routes and the rate-limit hook saw."""

    hook_calls: list[tuple[str, str, int, str]] = field(default_factory=list)
    echo_calls: int = 0


async def identify_by_user_header(request: Request) -> str | None:
    return request.headers.get("x-user")


def build_app(limits: RateLimits | None, recorder: Recorder, *, origins: list[str]) -> FastAPI:
    """A tiny app wired the way the real one is meant to be."""
    app = FastAPI()
    proxies = TrustedProxies.parse(["127.0.0.1"])
    if limits is not None:
        setattr(app.state, APP_STATE_ATTRIBUTE, limits)

        async def on_exceeded(
            request: Request, scope: str, identity: str, retry_after_s: int
        ) -> None:
            recorder.hook_calls.append((scope, identity, retry_after_s, request.url.path))

        limits.on_exceeded = on_exceeded
    app.add_exception_handler(RateLimitExceededError, rate_limit_exceeded_handler)

    @app.get("/api/v1/things")
    async def things() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/api/v1/echo")
    async def echo(body: Annotated[dict[str, Any], Body()]) -> dict[str, int]:
        recorder.echo_calls += 1
        return {"keys": len(body)}

    @app.post("/api/v1/documents")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/api/v1/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/api/v1/own-headers")
    async def own_headers() -> Response:
        return Response(
            "{}",
            media_type="application/json",
            headers={"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "sandbox"},
        )

    @app.get("/api/v1/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get(
        "/api/v1/questions",
        dependencies=[Depends(rate_limited("questions", identify_by_user_header))],
    )
    async def questions() -> dict[str, bool]:
        return {"ok": True}

    @app.get(
        "/api/v1/by-address",
        dependencies=[Depends(rate_limited("login_address", identify_by_address(proxies)))],
    )
    async def by_address() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/api/v1/login")
    async def login(request: Request, email: Annotated[str, Body(embed=True)]) -> dict[str, bool]:
        # The account is only known from the body: the route counts the hit itself.
        await limits_of(request).enforce(request, "login_account", email.casefold())
        return {"ok": True}

    # Innermost first: the last one added is the outermost layer.
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=JSON_LIMIT,
        max_other_bytes=OTHER_LIMIT,
        path_limits={"/api/v1/documents": UPLOAD_LIMIT},
    )
    app.add_middleware(
        SecurityHeadersMiddleware, docs_paths=docs_paths_of(app), trusted_proxies=proxies
    )
    app.add_middleware(RequestContextMiddleware)
    add_cors(app, origins)
    return app


def limits_of(request: Request) -> RateLimits:
    return getattr(request.app.state, APP_STATE_ATTRIBUTE)


def rates() -> dict[str, Any]:
    return {
        "questions": parse_rate(f"{QUESTIONS_PER_MINUTE}/minute"),
        "login_account": parse_rate("2/15minute"),
        "login_address": parse_rate("2/minute"),
        "upload": parse_rate("60/hour"),
    }


def client_for(
    app: FastAPI, *, base_url: str = "http://api.test", peer: str = "127.0.0.1"
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(peer, 4711))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def prefix() -> str:
    return f"ragledger-test:{uuid.uuid4().hex}:rl"


@pytest.fixture
async def redis_client(prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    # Only this test's keys, never the whole database.
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limits(
    request: pytest.FixtureRequest, prefix: str, redis_client: Redis
) -> AsyncIterator[RateLimits]:
    if request.param == "memory":
        instance = RateLimits(rates(), key_prefix=prefix)
    else:
        instance = RateLimits(rates(), redis=redis_client, key_prefix=prefix)
        await instance.prepare()
    yield instance
    await instance.aclose()


@pytest.fixture
async def client(limits: RateLimits, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(build_app(limits, recorder, origins=[ALLOWED_ORIGIN])) as http:
        yield http


@pytest.fixture
def plain_app(recorder: Recorder) -> FastAPI:
    return build_app(RateLimits(rates()), recorder, origins=[ALLOWED_ORIGIN])


# Security headers.

BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def assert_base_headers(response: httpx.Response) -> None:
    for name, value in BASE_HEADERS.items():
        assert response.headers.get(name) == value, name


async def test_json_response_gets_every_header_and_the_strict_csp(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        response = await http.get("/api/v1/things")
    assert response.status_code == 200
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert "strict-transport-security" not in response.headers
    assert response.headers["x-request-id"]


async def test_404_and_event_stream_get_the_strict_csp(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        missing = await http.get("/nowhere")
        stream = await http.get("/api/v1/stream")
    assert missing.status_code == 404
    assert_base_headers(missing)
    assert missing.headers["content-security-policy"] == STRICT_CSP
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["content-security-policy"] == STRICT_CSP


async def test_docs_pages_keep_working(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        docs = await http.get("/docs")
        redoc = await http.get("/redoc")
        schema = await http.get("/openapi.json")
    for page in (docs, redoc):
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert_base_headers(page)
        # No script policy on the docs pages: their CDN scripts and inline bootstrap run.
        assert page.headers["content-security-policy"] == DOCS_CSP
    assert "cdn.jsdelivr.net" in docs.text
    assert schema.status_code == 200
    assert schema.headers["content-security-policy"] == STRICT_CSP


async def test_headers_a_route_set_are_kept(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        response = await http.get("/api/v1/own-headers")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.headers.get_list("x-frame-options")) == 1


async def test_hsts_only_over_https(plain_app: FastAPI):
    async with client_for(plain_app, base_url="https://api.test") as http:
        direct = await http.get("/api/v1/things")
    async with client_for(plain_app) as http:
        proxied = await http.get("/api/v1/things", headers={"X-Forwarded-Proto": "https"})
    async with client_for(plain_app, peer="203.0.113.5") as http:
        spoofed = await http.get("/api/v1/things", headers={"X-Forwarded-Proto": "https"})
    assert direct.headers["strict-transport-security"].startswith("max-age=")
    assert proxied.headers["strict-transport-security"].startswith("max-age=")
    assert "strict-transport-security" not in spoofed.headers


# CORS.


async def test_cors_allows_the_listed_origin_with_credentials(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        preflight = await http.options(
            "/api/v1/echo",
            headers={
                "Origin": ALLOWED_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        simple = await http.get("/api/v1/things", headers={"Origin": ALLOWED_ORIGIN})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {
        h.strip().lower() for h in simple.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-request-id", "retry-after"} <= exposed


async def test_cors_refuses_other_origins(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        preflight = await http.options(
            "/api/v1/echo",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        simple = await http.get("/api/v1/things", headers={"Origin": "https://evil.example"})
        put = await http.options(
            "/api/v1/echo",
            headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "PUT"},
        )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    assert put.status_code == 400


@pytest.mark.parametrize(
    "origins",
    [["*"], [ALLOWED_ORIGIN, "*"], ["https://app.example.com/"], ["app.example.com"]],
)
def test_cors_refuses_wildcards_and_malformed_origins(origins: list[str]):
    with pytest.raises(ValueError, match="CORS origin"):
        add_cors(FastAPI(), origins)


async def test_no_origins_means_no_cors_at_all(recorder: Recorder):
    app = build_app(None, recorder, origins=[])
    assert not any(m.cls.__name__ == "CORSMiddleware" for m in app.user_middleware)
    async with client_for(app) as http:
        response = await http.get("/api/v1/things", headers={"Origin": ALLOWED_ORIGIN})
    assert "access-control-allow-origin" not in response.headers


# Body limits.


async def test_normal_json_body_passes(plain_app: FastAPI, recorder: Recorder):
    async with client_for(plain_app) as http:
        response = await http.post("/api/v1/echo", json={"a": "x" * 100})
    assert response.status_code == 200
    assert response.json() == {"keys": 1}
    assert recorder.echo_calls == 1


async def test_declared_oversize_json_gets_413_before_the_app(
    plain_app: FastAPI, recorder: Recorder
):
    async with client_for(plain_app) as http:
        response = await http.post("/api/v1/echo", json={"a": "x" * JSON_LIMIT})
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body too large (limit {JSON_LIMIT} bytes)"}
    assert_base_headers(response)
    assert recorder.echo_calls == 0


async def test_chunked_oversize_json_gets_413_not_500(plain_app: FastAPI, recorder: Recorder):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(8):
            yield b"x" * 256
        yield b'"}'

    async with client_for(plain_app) as http:
        response = await http.post(
            "/api/v1/echo", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body too large (limit {JSON_LIMIT} bytes)"}
    assert recorder.echo_calls == 0


async def test_chunked_small_json_passes(plain_app: FastAPI, recorder: Recorder):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b'"small"}'

    async with client_for(plain_app) as http:
        response = await http.post(
            "/api/v1/echo", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200
    assert recorder.echo_calls == 1


async def test_a_missing_content_type_is_held_to_the_json_limit(plain_app: FastAPI):
    async with client_for(plain_app) as http:
        response = await http.post("/api/v1/raw", content=b"x" * (JSON_LIMIT + 1))
    assert response.status_code == 413


async def test_other_bodies_use_the_path_override_or_the_default(plain_app: FastAPI):
    binary = {"Content-Type": "application/octet-stream"}
    between = b"x" * (OTHER_LIMIT + 100)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000

    async with client_for(plain_app) as http:
        upload_ok = await http.post("/api/v1/documents", content=between, headers=binary)
        other_refused = await http.post("/api/v1/raw", content=between, headers=binary)
        upload_refused = await http.post(
            "/api/v1/documents", content=b"x" * (UPLOAD_LIMIT + 1), headers=binary
        )
        upload_streamed = await http.post("/api/v1/documents", content=chunks(), headers=binary)
        multipart = await http.post(
            "/api/v1/raw", files={"file": ("a.bin", b"x" * (OTHER_LIMIT + 1))}
        )
    assert upload_ok.status_code == 200
    assert upload_ok.json() == {"size": len(between)}
    assert other_refused.status_code == 413
    assert other_refused.json()["detail"] == f"request body too large (limit {OTHER_LIMIT} bytes)"
    assert upload_refused.status_code == 413
    assert upload_streamed.status_code == 413
    assert multipart.status_code == 413


def test_body_limit_refuses_a_bad_prefix():
    with pytest.raises(ValueError, match="path prefix"):
        BodyLimitMiddleware(FastAPI(), max_json_bytes=10, path_limits={"documents": 10})


# Rate limits, on both backends.


async def test_limit_then_429_with_retry_after_and_hook(
    client: httpx.AsyncClient, recorder: Recorder
):
    alice = {"X-User": "alice"}
    for _ in range(QUESTIONS_PER_MINUTE):
        assert (await client.get("/api/v1/questions", headers=alice)).status_code == 200
    refused = await client.get("/api/v1/questions", headers={**alice, "Origin": ALLOWED_ORIGIN})
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 61  # the window, rounded up
    assert refused.json() == {"detail": f"rate limit exceeded, retry in {retry_after} s"}
    # CORS wraps the 429, so a browser page can read how long to wait.
    assert refused.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert_base_headers(refused)
    assert recorder.hook_calls == [("questions", "alice", retry_after, "/api/v1/questions")]
    # Another identity has its own bucket; no identity means no limit.
    assert (await client.get("/api/v1/questions", headers={"X-User": "bob"})).status_code == 200
    for _ in range(QUESTIONS_PER_MINUTE + 1):
        assert (await client.get("/api/v1/questions")).status_code == 200


async def test_login_route_counts_the_account_itself(client: httpx.AsyncClient, recorder: Recorder):
    for email in ("Eve@Example.com", "eve@example.com"):
        assert (await client.post("/api/v1/login", json={"email": email})).status_code == 200
    refused = await client.post("/api/v1/login", json={"email": "EVE@example.com"})
    assert refused.status_code == 429
    # 2 per 15 minutes: the wait is most of that window.
    assert 14 * 60 <= int(refused.headers["retry-after"]) <= 15 * 60 + 1
    assert recorder.hook_calls[0][:2] == ("login_account", "eve@example.com")


async def test_address_limit_uses_the_client_address(client: httpx.AsyncClient):
    # The test transport's peer is 127.0.0.1, a trusted proxy in this app.
    for address in ("198.51.100.1", "198.51.100.1"):
        headers = {"X-Forwarded-For": f"1.1.1.1, {address}"}
        assert (await client.get("/api/v1/by-address", headers=headers)).status_code == 200
    blocked = {"X-Forwarded-For": "198.51.100.1"}
    assert (await client.get("/api/v1/by-address", headers=blocked)).status_code == 429
    other = {"X-Forwarded-For": "198.51.100.1, 198.51.100.2"}
    assert (await client.get("/api/v1/by-address", headers=other)).status_code == 200


async def test_hit_never_waits_and_reset_lifts_a_lockout(limits: RateLimits):
    for _ in range(QUESTIONS_PER_MINUTE):
        assert (await limits.hit("questions", "carol")).allowed
    refused = await limits.hit("questions", "carol")
    assert not refused.allowed
    assert 1 <= refused.retry_after_s <= 61
    await limits.reset("questions", "carol")
    assert (await limits.hit("questions", "carol")).allowed
    with pytest.raises(ValueError, match="unknown rate limit scope"):
        await limits.hit("nope", "carol")


async def test_scopes_are_counted_apart(limits: RateLimits):
    for _ in range(QUESTIONS_PER_MINUTE):
        assert (await limits.hit("questions", "dave")).allowed
    assert not (await limits.hit("questions", "dave")).allowed
    assert (await limits.hit("upload", "dave")).allowed


# Redis only.


async def test_two_instances_on_one_redis_share_counts(prefix: str, redis_client: Redis):
    # Two processes' views: separate clients and RateLimits, the same server and prefix.
    other_client = Redis.from_url(REDIS_URL)
    first = RateLimits(rates(), redis=redis_client, key_prefix=prefix)
    second = RateLimits(rates(), redis=other_client, key_prefix=prefix)
    try:
        assert (await first.hit("questions", "erin")).allowed
        assert (await second.hit("questions", "erin")).allowed
        assert (await first.hit("questions", "erin")).allowed
        assert not (await second.hit("questions", "erin")).allowed
        assert not (await first.hit("questions", "erin")).allowed
        await second.reset("questions", "erin")
        assert (await first.hit("questions", "erin")).allowed
    finally:
        await other_client.aclose()


async def test_redis_keys_are_namespaced_and_expire(prefix: str, redis_client: Redis):
    limits = RateLimits(rates(), redis=redis_client, key_prefix=prefix)
    await limits.hit("questions", "frank")
    key = f"{prefix}:questions:frank"
    assert limits.key("questions", "frank") == key
    assert await redis_client.zcard(key) == 1
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= 61_000


async def test_a_lost_script_is_loaded_again(prefix: str, redis_client: Redis):
    limits = RateLimits(rates(), redis=redis_client, key_prefix=prefix)
    assert (await limits.hit("questions", "gina")).allowed
    # As if Redis had restarted: the hash the limits hold no longer names a loaded
    # script. Every client must survive a flush (NOSCRIPT), so a shared server is safe.
    await redis_client.script_flush()
    assert (await limits.hit("questions", "gina")).allowed
    assert await redis_client.zcard(f"{prefix}:questions:gina") == 2


@pytest.mark.parametrize("fail_open", [True, False])
async def test_unreachable_redis(fail_open: bool, prefix: str):
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    limits = RateLimits(rates(), redis=dead, key_prefix=prefix, fail_open=fail_open)
    try:
        if fail_open:
            # The limit still holds, counted in this process while Redis is away.
            verdicts = [(await limits.hit("login_account", "hank")).allowed for _ in range(3)]
            assert verdicts == [True, True, False]
        else:
            with pytest.raises(RedisError):
                await limits.hit("questions", "hank")
    finally:
        await dead.aclose()


async def test_a_missing_rate_limits_state_is_a_server_error(recorder: Recorder):
    app = build_app(None, recorder, origins=[])
    async with client_for(app) as http:
        response = await http.get("/api/v1/questions", headers={"X-User": "ivy"})
    assert response.status_code == 500
