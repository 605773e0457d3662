"""Embeddings from any model litellm speaks to (OpenAI, Azure, Ollama, OpenAI-compatible).

Rows are normalised to unit length like the local model's, so vectors of either can be
compared by dot product. `get_embedder` (services/embedding.py) hands these out.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import structlog

from ragledger.core import metrics
from ragledger.services.embedding import (
    Embedder,
    EmbeddingError,
    EmbeddingModelInfo,
    local_token_counter,
    normalise_rows,
)

log = structlog.get_logger(__name__)


class LiteLLMEmbedder(Embedder):
    """Any embedding model litellm speaks to (OpenAI, Azure, Ollama, OpenAI-compatible)."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None,
        batch_size: int,
        dimensions: int | None,
        timeout_s: float,
        api_key: str | None = None,
        max_retries: int = 2,
        token_counter: Callable[[str], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._model = model
        self._api_base = api_base
        self._batch_size = batch_size
        self._dimensions = dimensions
        self._timeout_s = timeout_s
        self._api_key = api_key
        self._max_retries = max_retries
        self._token_counter = token_counter
        self._files_sha256 = hashlib.sha256(model.encode("utf-8")).hexdigest()

    @property
    def info(self) -> EmbeddingModelInfo:
        """The litellm model string, its dimensions and the sha256 of the model string.

        With no configured dimensions they are learnt from the first response; before
        that, asking raises EmbeddingError.
        """
        if self._dimensions is None:
            raise EmbeddingError(
                f"dimensions of {self._model} are unknown until it has embedded a text"
            )
        return EmbeddingModelInfo(
            name=self._model, dimensions=self._dimensions, files_sha256=self._files_sha256
        )

    def count_tokens(self, text: str) -> int:
        """Tokens of the bundled MiniLM tokenizer, an approximation for remote models.

        Remote tokenizers are not available offline (tiktoken fetches its tables, other
        providers publish none), and the chunk budget is a size target, not a hard limit:
        remote models accept thousands of tokens, and English word-piece counts stay
        within about 10% of BPE counts. Using one tokenizer also keeps chunk boundaries
        independent of the embedding model chosen.
        """
        if self._token_counter is None:
            self._token_counter = local_token_counter()
        return self._token_counter(text)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts through litellm in batches of batch_size; rows are unit vectors."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        if not texts:
            return np.empty((0, self._dimensions or 0), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self._batch_size):
            parts.append(await self._embed_batch(list(texts[start : start + self._batch_size])))
        return np.concatenate(parts, axis=0)

    async def _embed_batch(self, batch: list[str]) -> np.ndarray:
        litellm = _import_litellm()
        started = time.perf_counter()
        try:
            response = await litellm.aembedding(
                model=self._model,
                input=batch,
                api_base=self._api_base,
                api_key=self._api_key,
                timeout=self._timeout_s,
                max_retries=self._max_retries,
            )
        except Exception as exc:
            raise EmbeddingError(
                f"embedding model {self._model} failed: {type(exc).__name__}: {exc}"
            ) from exc
        vectors = self._parse(response, len(batch))
        elapsed = time.perf_counter() - started
        metrics.embedding_batch_duration.labels(self._model).observe(elapsed)
        log.debug(
            "embedding_batch",
            model=self._model,
            size=len(batch),
            ms=round(elapsed * 1000, 1),
        )
        return normalise_rows(vectors)

    def _parse(self, response: Any, expected_rows: int) -> np.ndarray:
        """The response's vectors in input order, checked for count and dimension."""
        data = getattr(response, "data", None)
        if data is None and isinstance(response, dict):
            data = response.get("data")
        if not data or len(data) != expected_rows:
            got = 0 if not data else len(data)
            raise EmbeddingError(
                f"embedding model {self._model} returned {got} vectors for {expected_rows} texts"
            )
        items = [_as_mapping(item) for item in data]
        # The API promises an index per item, not the order of the list.
        items.sort(key=lambda item: int(item.get("index", 0)))
        try:
            vectors = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (KeyError, ValueError, TypeError) as exc:
            raise EmbeddingError(
                f"embedding model {self._model} returned malformed vectors"
            ) from exc
        if vectors.ndim != 2:
            raise EmbeddingError(f"embedding model {self._model} returned ragged vectors")
        dims = int(vectors.shape[1])
        if self._dimensions is None:
            self._dimensions = dims
        elif dims != self._dimensions:
            raise EmbeddingError(
                f"embedding model {self._model} returned {dims}-dimensional vectors, "
                f"configured for {self._dimensions} (EMBEDDING_DIMENSIONS)"
            )
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingError(f"embedding model {self._model} returned non-finite values")
        return vectors

    async def aclose(self, *, wait: bool = True) -> None:
        """Nothing to release: litellm owns its HTTP clients."""


def _as_mapping(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        dumped: dict[str, Any] = item.model_dump()
        return dumped
    return dict(item)


def _import_litellm() -> Any:
    """litellm, imported without fetching its model cost map from GitHub."""
    import ragledger.core.litellm_cost_map  # noqa: F401  # isort: skip
    import litellm

    # Its "Give Feedback / Get Help" banner on every exception is noise in our logs.
    litellm.suppress_debug_info = True
    return litellm
