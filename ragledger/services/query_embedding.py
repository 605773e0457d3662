"""Question embeddings, cached through fastapi-cache by model and text hash."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import structlog
from fastapi_cache import FastAPICache
from redis.exceptions import RedisError

from ragledger.services.embedding import Embedder

log = structlog.get_logger(__name__)


def cache_key(model: str, text: str, *, prefix: str = "") -> str:
    """The cache key: the model and the sha256 of the text (never the text itself)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{prefix}qemb:{hashlib.sha256(model.encode()).hexdigest()[:16]}:{digest}"


async def embed_query(embedder: Embedder, text: str, *, ttl_s: int) -> tuple[np.ndarray, bool]:
    """The query's vector and whether it came from the cache."""
    model = embedder.info.name
    # Set up by the app's lifespan; without it (CLI, tests of the service) no cache.
    backend = FastAPICache._backend
    key = cache_key(model, text, prefix=FastAPICache.get_prefix() if backend else "")
    if backend is not None:
        try:
            cached = await backend.get(key)
        except RedisError as exc:
            # A cache that cannot be reached is a miss, not a failed question.
            log.warning("query_embedding_cache_unavailable", error=type(exc).__name__)
            backend, cached = None, None
        if cached:
            raw = cached if isinstance(cached, bytes) else str(cached).encode()
            return np.frombuffer(base64.b64decode(raw), dtype="<f4").copy(), True
    vector = (await embedder.embed([text]))[0]
    if backend is not None and ttl_s > 0:
        try:
            await backend.set(key, base64.b64encode(vector.astype("<f4").tobytes()), expire=ttl_s)
        except RedisError as exc:
            log.warning("query_embedding_cache_unavailable", error=type(exc).__name__)
    return vector, False
