"""The process-wide `LocalLLM` and its registration with litellm (startup, shutdown)."""

from __future__ import annotations

# Before litellm's import: otherwise it fetches its cost map from GitHub at import time.
import ragledger.core.litellm_cost_map  # noqa: F401

# isort: split

import threading
from typing import TYPE_CHECKING, Any

import litellm
import structlog

from ragledger.services.local_llm.definitions import (
    CONTEXT_WINDOW,
    LOCAL_LLM_MODEL,
    LOCAL_LLM_PROVIDER,
)
from ragledger.services.local_llm.engine import LocalLLM
from ragledger.services.local_llm.gguf_cache import find_gguf_file, local_llm_cache_dir
from ragledger.services.local_llm.provider import LocalLLMProvider

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

_shared_llm: LocalLLM | None = None
_shared_lock = threading.Lock()


def get_local_llm(settings: Settings) -> LocalLLM:
    """The process-wide LocalLLM, created (not loaded) on first use.

    Its cache dir and torch threads are those of the first caller's settings, so the
    weights are in memory once however many services ask.
    """
    global _shared_llm
    with _shared_lock:
        if _shared_llm is None:
            _shared_llm = LocalLLM(
                find_gguf_file(),
                local_llm_cache_dir(settings.data_dir),
                torch_threads=settings.torch_threads,
            )
        return _shared_llm


def _registered_handler() -> Any:
    for item in litellm.custom_provider_map:
        if item.get("provider") == LOCAL_LLM_PROVIDER:
            return item.get("custom_handler")
    return None


def register_local_llm(settings: Settings) -> None:
    """Make `LOCAL_LLM_MODEL` callable through litellm; cheap and idempotent.

    The model itself loads on the first request (or on `warm_up()`), on the worker.
    Other custom providers registered with litellm are kept.
    """
    llm = get_local_llm(settings)
    with _shared_lock:
        handler = _registered_handler()
        if isinstance(handler, LocalLLMProvider) and handler.llm is llm:
            return
        others = [
            item
            for item in litellm.custom_provider_map
            if item.get("provider") != LOCAL_LLM_PROVIDER
        ]
        litellm.custom_provider_map = [
            *others,
            {"provider": LOCAL_LLM_PROVIDER, "custom_handler": LocalLLMProvider(llm)},
        ]
        # Known to litellm's model map, the model gets a zero cost instead of a failed
        # cost lookup on every call, and get_model_info() reports its context window.
        litellm.register_model(
            {
                LOCAL_LLM_MODEL: {
                    "litellm_provider": LOCAL_LLM_PROVIDER,
                    "mode": "chat",
                    "max_input_tokens": CONTEXT_WINDOW,
                    "max_output_tokens": CONTEXT_WINDOW,
                    "max_tokens": CONTEXT_WINDOW,
                    "input_cost_per_token": 0.0,
                    "output_cost_per_token": 0.0,
                    "cache_creation_input_token_cost": 0.0,
                    "cache_read_input_token_cost": 0.0,
                }
            }
        )
        log.debug("local_llm_registered", model=LOCAL_LLM_MODEL, cache_dir=str(llm.cache_dir))


async def close_local_llm(*, wait: bool = True) -> None:
    """Unregister the provider, stop the worker and drop the model (shutdown, tests).

    Without `wait`, a load in progress is abandoned rather than waited for.
    """
    global _shared_llm
    with _shared_lock:
        llm, _shared_llm = _shared_llm, None
        litellm.custom_provider_map = [
            item
            for item in litellm.custom_provider_map
            if item.get("provider") != LOCAL_LLM_PROVIDER
        ]
    if llm is not None:
        await llm.aclose(wait=wait)
