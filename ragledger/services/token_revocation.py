"""Revoked token ids, kept until the token would have expired anyway.

Why a revocation list and not fastapi-users' database strategy: tokens stay stateless
JWTs, so verifying one costs no database round trip of its own (we already load the
user row to check `is_active`, which is what makes deactivation immediate); logout adds
one Redis key per token that expires with the token, so the list never grows beyond
the tokens still alive. With REDIS_URL unset (one process, development) the list is
in memory.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as redis


class TokenRevocations(Protocol):
    """Where revoked token ids are kept."""

    async def revoke(self, token_id: str, expires_at: float) -> None:
        """Refuse `token_id` until `expires_at` (Unix seconds)."""

    async def is_revoked(self, token_id: str) -> bool:
        """Whether `token_id` was revoked."""

    async def aclose(self) -> None:
        """Release connections."""


class RedisTokenRevocations:
    """Revocations shared by every process through Redis keys with a TTL."""

    def __init__(self, client: redis.Redis, *, prefix: str = "ragledger:revoked:") -> None:
        self._client = client
        self._prefix = prefix

    async def revoke(self, token_id: str, expires_at: float) -> None:
        """Set a key that expires with the token."""
        ttl = max(int(expires_at - time.time()) + 1, 1)
        await self._client.set(self._prefix + token_id, b"1", ex=ttl)

    async def is_revoked(self, token_id: str) -> bool:
        """One Redis EXISTS."""
        return bool(await self._client.exists(self._prefix + token_id))

    async def aclose(self) -> None:
        """Close the Redis client."""
        await self._client.aclose()


class MemoryTokenRevocations:
    """Revocations of a single process (no REDIS_URL)."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}

    async def revoke(self, token_id: str, expires_at: float) -> None:
        """Remember the id; forget expired ones on the way."""
        now = time.time()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[token_id] = expires_at

    async def is_revoked(self, token_id: str) -> bool:
        """Whether the id was revoked and its token has not expired."""
        expires_at = self._revoked.get(token_id)
        return expires_at is not None and expires_at > time.time()

    async def aclose(self) -> None:
        """Nothing to release."""


def create_token_revocations(
    redis_url: str | None, *, prefix: str = "ragledger:"
) -> TokenRevocations:
    """Redis-backed when a URL is configured, in memory otherwise."""
    if redis_url:
        return RedisTokenRevocations(redis.Redis.from_url(redis_url), prefix=f"{prefix}revoked:")
    return MemoryTokenRevocations()
