"""Rate limits per scope and identity, in Redis (shared by every process) or in memory.

Each scope (`login_account`, `login_address`, `upload`, `questions`, ...) has one rate, set
as "N/period" in settings. Each identity (an account, an address, a user id) within a
scope has its own sliding-window bucket from pyrate-limiter: a `RedisBucket` under the
key `<prefix>:<scope>:<identity>` when REDIS_URL is set, an `InMemoryBucket` otherwise.

Why fastapi-limiter's `RateLimiter` dependency is not used here (pyrate-limiter's
buckets are, directly; fastapi-limiter is not a dependency):
- It calls `Limiter.try_acquire_async(key)`, and a `Limiter` built from a rate or a
  bucket routes every key into that one bucket: the key only names the items, so
  "5/minute per user" silently becomes 5/minute for all users together. Per-identity
  limits need a bucket per identity, which is what this module keeps.
- `try_acquire_async` answers a bare bool, and its callback gets `(request, response)`
  only, so neither the `Retry-After` header nor the `RateLimitExceeded` event could
  say how long the lockout lasts. Here one atomic bucket check (`put_decision`, one
  Lua call on Redis) yields both the verdict and the wait.
- It keys by the route's index in `app.routes`, so a scope shared by two routes would
  count twice, and `reset()` could not name the key to clear.
- Its default identifier takes the leftmost X-Forwarded-For entry, which the client
  chooses; identities here come from `TrustedProxies` or the authenticated user.

So routes use `rate_limited(scope, identify)` as a dependency when the identity is
known from the request alone, and call `RateLimits.enforce()` (or `hit()`) themselves
when it is only known inside the route, such as the account of a login form.

`hit()` never waits: an exceeded limit is answered at once with the seconds to wait.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from inspect import isawaitable

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from pyrate_limiter import (
    Decision,
    Duration,
    InMemoryBucket,
    MonotonicClock,
    Rate,
    RateItem,
    RedisBucket,
)
from pyrate_limiter.buckets.redis_bucket import LuaScript
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from ragledger.api.client_address import TrustedProxies
from ragledger.core import metrics
from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_KEY_PREFIX = "ragledger:rl"
# Where the caller keeps the app's RateLimits (`app.state.rate_limits`).
APP_STATE_ATTRIBUTE = "rate_limits"
# A Redis that does not answer (a host gone, packets dropped) must not hold a request for
# the OS's connect timeout (minutes): one second, then the in-process fallback, and Redis
# is tried again after REDIS_RETRY_AFTER_S. A healthy local Redis answers in under 1 ms.
REDIS_TIMEOUT_S = 1.0
REDIS_RETRY_AFTER_S = 5.0
# The zset member name of a hit. A constant rather than the identity, so personal data
# (an email address) appears once in the key, not again in every member.
_ITEM_NAME = "hit"

type Identify = Callable[[Request], Awaitable[str | None]]
type OnExceeded = Callable[[Request, str, str, int], Awaitable[None]]


class RateScope(StrEnum):
    """The rate-limited actions."""

    LOGIN_ACCOUNT = "login_account"
    LOGIN_ADDRESS = "login_address"
    UPLOAD = "upload"
    QUESTIONS = "questions"
    SEARCH = "search"
    RESET_REQUEST_ADDRESS = "reset_request_address"
    RESET_REQUEST_ACCOUNT = "reset_request_account"


# The setting holding each scope's rate.
SCOPE_SETTINGS: Mapping[RateScope, str] = {
    RateScope.LOGIN_ACCOUNT: "rate_limit_login_per_account",
    RateScope.LOGIN_ADDRESS: "rate_limit_login_per_address",
    RateScope.UPLOAD: "rate_limit_upload_per_user",
    RateScope.QUESTIONS: "rate_limit_questions_per_user",
    RateScope.SEARCH: "rate_limit_search_per_user",
    RateScope.RESET_REQUEST_ADDRESS: "rate_limit_reset_request_per_address",
    RateScope.RESET_REQUEST_ACCOUNT: "rate_limit_reset_request_per_account",
}

_PERIODS_MS: Mapping[str, int] = {
    "second": Duration.SECOND.value,
    "minute": Duration.MINUTE.value,
    "hour": Duration.HOUR.value,
    "day": Duration.DAY.value,
}
_RATE_PATTERN = re.compile(
    r"\s*([0-9]+)\s*/\s*([0-9]*)\s*(second|minute|hour|day)s?\s*", re.IGNORECASE | re.ASCII
)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict on one hit: allowed, or refused with the seconds until a slot frees."""

    allowed: bool
    retry_after_s: int = 0


class RateLimitExceededError(Exception):
    """A rate limit refused the request; the app answers 429 with Retry-After."""

    def __init__(self, retry_after_s: int, scope: str | None = None) -> None:
        super().__init__(f"rate limit exceeded, retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.scope = scope


def parse_rate(text: str) -> Rate:
    """Parse "N/period" ("30/minute", "10/15minute") into a pyrate-limiter Rate."""
    match = _RATE_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid rate limit {text!r}: expected 'N/period' where period is second, "
            "minute, hour or day, optionally with a multiplier (e.g. '30/minute', "
            "'10/15minute')"
        )
    count, multiplier_text, period = match.groups()
    limit = int(count)
    multiplier = int(multiplier_text) if multiplier_text else 1
    if limit < 1:
        raise ValueError(f"invalid rate limit {text!r}: the count must be at least 1")
    if multiplier < 1:
        raise ValueError(f"invalid rate limit {text!r}: the period multiplier must be at least 1")
    return Rate(limit, multiplier * _PERIODS_MS[period.lower()])


async def _no_op_hook(request: Request, scope: str, identity: str, retry_after_s: int) -> None:
    return None


class RateLimits:
    """The app's rate limits: one rate per scope, one bucket per scope and identity."""

    def __init__(
        self,
        rates: Mapping[str, Rate],
        *,
        redis: Redis | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        owns_redis: bool = False,
        fail_open: bool = True,
    ) -> None:
        """Use Redis when given (shared by all processes), else in-process buckets.

        `fail_open`: when Redis cannot be reached, count in this process's memory
        instead (and log an error): an outage of Redis then makes the limits per
        process, for as long as it lasts, but never switches them off (login
        guessing) and never fails the request. Without it, the Redis error is raised.
        """
        if not rates:
            raise ValueError("RateLimits needs at least one scope")
        self.rates: dict[str, Rate] = {str(scope): rate for scope, rate in rates.items()}
        self.key_prefix = key_prefix.rstrip(":")
        self.fail_open = fail_open
        # Called with (request, scope, identity, retry_after_s) before a 429; the app
        # appends the RateLimitExceeded event here.
        self.on_exceeded: OnExceeded = _no_op_hook
        self._redis = redis
        self._owns_redis = owns_redis
        self._backend: _RedisBackend | _MemoryBackend = (
            _RedisBackend(redis) if redis is not None else _MemoryBackend()
        )
        # Where hits are counted while Redis cannot be reached, and until when.
        self._fallback = _MemoryBackend()
        self._redis_retry_at = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, key_prefix: str = DEFAULT_KEY_PREFIX, fail_open: bool = True
    ) -> RateLimits:
        """Build every scope from settings; raise ValueError naming a malformed rate."""
        rates: dict[str, Rate] = {}
        for scope, field in SCOPE_SETTINGS.items():
            try:
                rates[scope.value] = parse_rate(getattr(settings, field))
            except ValueError as exc:
                raise ValueError(f"setting {field.upper()}: {exc}") from exc
        # from_url connects lazily; `prepare()` checks the server at start-up.
        redis = (
            Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
            )
            if settings.redis_url
            else None
        )
        return cls(rates, redis=redis, key_prefix=key_prefix, owns_redis=True, fail_open=fail_open)

    @property
    def backend(self) -> str:
        """'redis' or 'memory'."""
        return "redis" if self._redis is not None else "memory"

    def key(self, scope: str, identity: str) -> str:
        """The storage key of one identity's bucket in one scope."""
        return f"{self.key_prefix}:{scope}:{identity}"

    async def prepare(self) -> None:
        """Reach the backend once (load the Lua script into Redis).

        An unreachable Redis fails start-up only without `fail_open`; with it, the app
        starts and counts in memory until Redis answers (a restart during an outage
        must not take the API down with it), and says so in the log.
        """
        if isinstance(self._backend, _RedisBackend):
            try:
                await self._backend.script_hash()
            except RedisError as exc:
                if not self.fail_open:
                    raise
                log.error(
                    "rate_limit_backend_unreachable_at_start",
                    error=type(exc).__name__,
                    fallback="memory",
                )

    async def _put(self, key: str, rate: Rate) -> Decision:
        if self.fail_open and time.monotonic() < self._redis_retry_at:
            # Redis failed a moment ago: do not make every request wait on it again.
            return await self._fallback.put(key, rate)
        try:
            return await self._backend.put(key, rate)
        except RedisError as exc:
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_AFTER_S
            log.error(
                "rate_limit_backend_error",
                key_scope=key.removeprefix(self.key_prefix + ":").split(":", 1)[0],
                error=type(exc).__name__,
                fallback="memory" if self.fail_open else None,
            )
            if not self.fail_open:
                raise
            return await self._fallback.put(key, rate)

    async def hit(self, scope: str, identity: str) -> RateDecision:
        """Count one hit for the identity in the scope; never waits for a free slot."""
        rate = self._rate(scope)
        decision = await self._put(self.key(scope, identity), rate)
        if decision.allowed:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after_s=_retry_after_s(decision, rate))

    async def enforce(self, request: Request, scope: str, identity: str) -> RateDecision:
        """Count one hit; when refused, call `on_exceeded` and raise RateLimitExceededError."""
        decision = await self.hit(scope, identity)
        if decision.allowed:
            return decision
        # The identity stays out of the log: logs cannot be crypto-shredded, the ledger
        # event written by the hook can.
        metrics.rate_limit_rejections.labels(str(scope)).inc()
        log.info("rate_limit_exceeded", scope=scope, retry_after_s=decision.retry_after_s)
        try:
            await self.on_exceeded(request, scope, identity, decision.retry_after_s)
        except Exception:
            # Failing to record the refusal must not turn it into an acceptance or a 500.
            log.exception("rate_limit_hook_failed", scope=scope)
        raise RateLimitExceededError(decision.retry_after_s, scope=scope)

    async def reset(self, scope: str, identity: str) -> None:
        """Forget the identity's hits in the scope (an admin lifting a lockout, tests)."""
        self._rate(scope)
        await self._fallback.reset(self.key(scope, identity))
        await self._backend.reset(self.key(scope, identity))

    async def aclose(self) -> None:
        """Close the Redis client when this object created it."""
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()

    def _rate(self, scope: str) -> Rate:
        try:
            return self.rates[scope]
        except KeyError:
            raise ValueError(
                f"unknown rate limit scope {scope!r}; known: {', '.join(sorted(self.rates))}"
            ) from None


def get_rate_limits(request: Request) -> RateLimits:
    """The app's RateLimits, kept on `app.state.rate_limits` by the app's start-up.

    Not read through AppServices (api/app_services.py): that module imports this one,
    and `rate_limited` serves any app that sets the attribute, the small app of
    tests/integration/api/test_edge_middleware.py included.
    """
    limits = getattr(request.app.state, APP_STATE_ATTRIBUTE, None)
    if not isinstance(limits, RateLimits):
        raise RuntimeError("app.state.rate_limits is not set: build RateLimits at start-up")
    return limits


def rate_limited(scope: str, identify: Identify) -> Callable[[Request], Awaitable[None]]:
    """A dependency counting one hit per request for the identity `identify` returns.

    `identify` returning None skips the limit (nothing to key on). An unknown scope
    raises ValueError when the route is declared, not when it is called.
    """
    try:
        scope_name = RateScope(scope).value
    except ValueError:
        known = ", ".join(member.value for member in RateScope)
        raise ValueError(f"unknown rate limit scope {scope!r}; known: {known}") from None

    async def dependency(request: Request) -> None:
        identity = await identify(request)
        if identity is None:
            return
        await get_rate_limits(request).enforce(request, scope_name, identity)

    dependency.__name__ = f"rate_limited_{scope_name}"
    return dependency


def identify_by_address(proxies: TrustedProxies) -> Identify:
    """An `identify` keying on the client's address (behind the trusted proxies)."""

    async def identify(request: Request) -> str | None:
        return proxies.client_address(request)

    return identify


def rate_limit_exceeded_handler(request: Request, exc: Exception) -> JSONResponse:
    """Answer RateLimitExceededError with 429, the wait in `detail` and in Retry-After."""
    if not isinstance(exc, RateLimitExceededError):
        raise exc
    return JSONResponse(
        {"detail": f"rate limit exceeded, retry in {exc.retry_after_s} s"},
        status_code=429,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def _retry_after_s(decision: Decision, rate: Rate) -> int:
    # No computed wait means the bucket could not say (it never happens for one hit
    # under a sliding window); a full interval is the safe upper bound.
    wait_ms = decision.retry_after_ms if decision.retry_after_ms is not None else rate.interval
    return max(1, math.ceil(wait_ms / 1000))


async def _resolve[T](value: T | Awaitable[T]) -> T:
    # pyrate-limiter's bucket methods answer a value or an awaitable, by backend.
    while isawaitable(value):
        value = await value
    return value


class _MemoryBackend:
    """In-process sliding windows, one InMemoryBucket per key; for a single process."""

    def __init__(self) -> None:
        self._buckets: dict[str, InMemoryBucket] = {}
        self._clock = MonotonicClock()
        self._next_sweep_ms = 0

    async def put(self, key: str, rate: Rate) -> Decision:
        now = self._clock.now()
        self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = InMemoryBucket([rate])
        # Drop hits that left the window, so a busy identity's list stays at `limit`.
        bucket.leak(now)
        # Synchronous for this bucket: no other task runs between check and insert.
        return await _resolve(bucket.put_decision(RateItem(_ITEM_NAME, now)))

    async def reset(self, key: str) -> None:
        self._buckets.pop(key, None)

    def _sweep(self, now: int) -> None:
        # Forget identities with no hit left in their window, at most once a minute,
        # so memory follows the active identities rather than every one ever seen.
        if now < self._next_sweep_ms:
            return
        self._next_sweep_ms = now + Duration.MINUTE.value
        for key, bucket in list(self._buckets.items()):
            bucket.leak(now)
            if bucket.count() == 0:
                del self._buckets[key]


class _RedisBackend:
    """Sliding windows in Redis sorted sets, checked and filled by one Lua script."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script_sha: str | None = None

    async def script_hash(self) -> str:
        if self._script_sha is None:
            self._script_sha = await self._redis.script_load(LuaScript.PUT_ITEM)
        return self._script_sha

    async def put(self, key: str, rate: Rate) -> Decision:
        # Wall-clock milliseconds: every process compares timestamps in the same set,
        # so a per-host monotonic clock would be meaningless here.
        item = RateItem(_ITEM_NAME, time.time_ns() // 1_000_000)
        try:
            decision = await self._put(key, rate, item)
        except NoScriptError:
            # Redis restarted or its script cache was flushed: load it again, once.
            self._script_sha = None
            decision = await self._put(key, rate, item)
        if decision.allowed:
            # pyrate-limiter leaves trimming to a background leaker per bucket, which
            # does not scale to a bucket per identity: trim here, and let an idle key
            # expire once its window has passed.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", f"({item.timestamp - rate.interval}")
                pipe.pexpire(key, rate.interval + Duration.SECOND.value)
                await pipe.execute()
        return decision

    async def _put(self, key: str, rate: Rate, item: RateItem) -> Decision:
        # A bucket object per call: it is only a view of the key, and its recorded
        # verdict (failing_rate) is then never shared between concurrent requests.
        bucket = RedisBucket([rate], self._redis, key, await self.script_hash())
        return await _resolve(bucket.put_decision(item))

    async def reset(self, key: str) -> None:
        await self._redis.delete(key)
