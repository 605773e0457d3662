"""Record security signals in a transaction of their own, bounded under attack.

A denied request rolls its own transaction back, yet the denial happened and must be
recorded: these appends commit independently of the request.

Anonymous traffic must not grow the permanent ledger without bound (50 requests with
bogus tokens appended 52 events). `SecurityEventRecorder.record` keeps the record but
bounds it: per source (the event's type, the client address, the account and a small
reason such as the denial's reason or the limit's scope) and per window of
SECURITY_EVENT_WINDOW_S seconds,
- the first occurrence is appended at once (with `count=1`);
- the others are counted, not appended;
- their number is appended as one event with `count=N` (the last one held back, with
  its count), by the next occurrence after the window or by `flush_due`, which the app
  calls periodically, whichever comes first.
So an event's `count` says how many occurrences it stands for, and the sum of the
counts is the number of occurrences. The windows live in Redis when configured (so the
bound holds across processes), in memory otherwise, and in memory while Redis cannot be
reached (the bound then holds per process).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.events import store
from ragledger.events.access import SECURITY_STREAM
from ragledger.events.envelope import EventMetadata
from ragledger.events.payloads import from_payload, to_payload
from ragledger.events.registry import registry

log = structlog.get_logger(__name__)

# Attacker-chosen text recorded in security events is cut to these lengths.
MAX_PATH_CHARS = 256
MAX_METHOD_CHARS = 16
MAX_EMAIL_CHARS = 320
# After a Redis error, windows are kept in memory this long before Redis is tried again.
REDIS_RETRY_AFTER_S = 5.0
# How many due summaries one flush takes from Redis at a time.
_FLUSH_BATCH = 100


def cap(text: str | None, limit: int) -> str | None:
    """`text` cut to `limit` characters (None stays None)."""
    return None if text is None else text[:limit]


def source_address(client_ip: str | None) -> str:
    """The address part of a source: IPv6 by its /64 (what one host is usually given)."""
    if not client_ip:
        return "-"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


async def record_security_event(
    sessionmaker: async_sessionmaker[AsyncSession],
    event: Any,
    metadata: EventMetadata,
    *,
    stream_id: str = SECURITY_STREAM,
) -> None:
    """Append one security event and commit it at once; failures are logged, not raised."""
    try:
        await store.append_autocommitted(sessionmaker, stream_id, [event], metadata=metadata)
    except Exception as exc:  # noqa: BLE001  (a denial must still be answered)
        log.error("security_event_not_recorded", event_type=type(event).__name__, error=repr(exc))


@dataclasses.dataclass(frozen=True, slots=True)
class HeldBack:
    """Occurrences of one source counted but not yet recorded, and the last of them."""

    source: str
    count: int
    template: str


class _MemoryWindows:
    """Windows of one process: source -> (window end in ms, held count, last template)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int, str]] = {}

    async def occur(self, source: str, template: str, window_ms: int, now_ms: int) -> int | None:
        current = self._windows.get(source)
        if current is None or now_ms >= current[0]:
            self._windows[source] = (now_ms + window_ms, 0, "")
            return current[1] if current is not None else 0
        end, held, _last = current
        self._windows[source] = (end, held + 1, template)
        return None

    async def take_due(self, now_ms: int, *, everything: bool = False) -> list[HeldBack]:
        due: list[HeldBack] = []
        for source, (end, held, template) in list(self._windows.items()):
            if everything or now_ms >= end:
                del self._windows[source]
                if held:
                    due.append(HeldBack(source, held, template))
        return due


# One round trip, atomic: open the source's window (and hand back what the previous one
# held) or count the occurrence in the open one and schedule its summary.
_OCCUR = """
local win, held, due = KEYS[1], KEYS[2], KEYS[3]
local window_ms, now_ms, template, source = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if redis.call('SET', win, '1', 'NX', 'PX', window_ms) then
  local count = redis.call('HGET', held, 'count')
  redis.call('DEL', held)
  redis.call('ZREM', due, source)
  return tonumber(count or '0')
end
redis.call('HINCRBY', held, 'count', 1)
redis.call('HSET', held, 'template', template)
redis.call('PEXPIRE', held, 86400000)
local left = redis.call('PTTL', win)
if left < 0 then left = 0 end
redis.call('ZADD', due, now_ms + left, source)
return -1
"""

# Take the summaries whose window has ended; whoever takes one records it.
_TAKE_DUE = """
local due, prefix, now_ms, limit = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local sources = redis.call('ZRANGEBYSCORE', due, '-inf', now_ms, 'LIMIT', 0, limit)
local out = {}
for _, source in ipairs(sources) do
  redis.call('ZREM', due, source)
  local held = prefix .. 'held:' .. source
  local values = redis.call('HMGET', held, 'count', 'template')
  redis.call('DEL', held)
  if values[1] then
    table.insert(out, source)
    table.insert(out, values[1])
    table.insert(out, values[2])
  end
end
return out
"""


class _RedisWindows:
    """Windows shared by every process through Redis (keys under `prefix`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._occur = redis.register_script(_OCCUR)
        self._take_due = redis.register_script(_TAKE_DUE)

    async def occur(self, source: str, template: str, window_ms: int, now_ms: int) -> int | None:
        p = self._prefix
        result = await self._occur(
            keys=[f"{p}win:{source}", f"{p}held:{source}", f"{p}due"],
            args=[window_ms, now_ms, template, source],
        )
        value = int(result)
        return None if value < 0 else value

    async def take_due(self, now_ms: int, *, everything: bool = False) -> list[HeldBack]:
        # Redis outlives the process: what is not due yet is left for whoever is running.
        del everything
        taken: list[HeldBack] = []
        while True:
            flat = await self._take_due(
                keys=[f"{self._prefix}due"], args=[self._prefix, now_ms, _FLUSH_BATCH]
            )
            for i in range(0, len(flat), 3):
                source, count, template = (_text(value) for value in flat[i : i + 3])
                taken.append(HeldBack(source, int(count), template))
            if len(flat) < 3 * _FLUSH_BATCH:
                return taken


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SecurityEventRecorder:
    """Appends security events, one per source and window plus the count held back."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        window_s: int,
        redis: Redis | None = None,
        key_prefix: str = "ragledger:sec:",
    ) -> None:
        self._sessionmaker = sessionmaker
        self._window_ms = window_s * 1000
        self._windows: _RedisWindows | _MemoryWindows = (
            _RedisWindows(redis, key_prefix) if redis is not None else _MemoryWindows()
        )
        # Where windows are kept while Redis cannot be reached, and until when.
        self._fallback = _MemoryWindows()
        self._redis_retry_at = 0.0

    async def record(self, event: Any, metadata: EventMetadata, *, source: str) -> None:
        """Append `event` (a dataclass with a `count` field) if it opens its source's
        window, with the count the previous window held back; else count it only.

        Never raises: a denial must be answered even when it cannot be recorded.
        """
        key = f"{type(event).__name__}:{source}"
        template = json.dumps(
            {"payload": to_payload(event), "metadata": metadata.to_json()}, sort_keys=True
        )
        now_ms = time.time_ns() // 1_000_000
        try:
            held = await self._occur(key, template, now_ms)
            if held is None:
                return
            await self._append(dataclasses.replace(event, count=1 + held), metadata)
        except Exception as exc:  # noqa: BLE001  (a denial must still be answered)
            log.error(
                "security_event_not_recorded", event_type=type(event).__name__, error=repr(exc)
            )

    async def _occur(self, key: str, template: str, now_ms: int) -> int | None:
        if time.monotonic() >= self._redis_retry_at:
            try:
                return await self._windows.occur(key, template, self._window_ms, now_ms)
            except RedisError as exc:
                # Not again for a while: a Redis that hangs would hold every denial.
                self._redis_retry_at = time.monotonic() + REDIS_RETRY_AFTER_S
                log.error("security_event_window_unavailable", error=type(exc).__name__)
        return await self._fallback.occur(key, template, self._window_ms, now_ms)

    async def flush_due(self, *, everything: bool = False) -> int:
        """Append one event per source whose window ended with occurrences held back;
        `everything` also takes this process's open windows (at shutdown). Returns how
        many events were appended."""
        now_ms = time.time_ns() // 1_000_000
        due = await self._fallback.take_due(now_ms, everything=everything)
        try:
            due += await self._windows.take_due(now_ms, everything=everything)
        except RedisError as exc:
            log.error("security_event_window_unavailable", error=type(exc).__name__)
        appended = 0
        for held in due:
            try:
                event, metadata = _from_template(held.source, held.template)
                await self._append(dataclasses.replace(event, count=held.count), metadata)
                appended += 1
            except Exception as exc:  # noqa: BLE001  (one bad summary must not stop the rest)
                log.error("security_event_summary_not_recorded", count=held.count, error=repr(exc))
        return appended

    async def _append(self, event: Any, metadata: EventMetadata) -> None:
        await store.append_autocommitted(
            self._sessionmaker, SECURITY_STREAM, [event], metadata=metadata
        )


def _from_template(source: str, template: str) -> tuple[Any, EventMetadata]:
    data = json.loads(template)
    cls = registry.get(source.split(":", 1)[0]).cls
    return from_payload(cls, data["payload"]), EventMetadata(**data["metadata"])
