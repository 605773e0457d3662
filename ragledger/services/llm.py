"""Every LLM call goes through litellm; this module streams one completion with timeouts.

The whole call has `llm_timeout_s`; any silence longer than `llm_stall_timeout_s`
(before the first token or between two) ends it, so an LLM that hangs turns into an
error event instead of a stream that never closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import structlog

# Before litellm's import: otherwise it fetches its cost map from GitHub at import time.
import ragledger.core.litellm_cost_map  # noqa: F401

# isort: split

import litellm

from ragledger.core import metrics
from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)
litellm.suppress_debug_info = True


def _quiet_litellm_loggers() -> None:
    # litellm attaches its own stdout handlers at import (INFO lines per call); route its
    # warnings through our logging instead, and keep its chatter out of the CLI's output.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.WARNING)


_quiet_litellm_loggers()


class LLMError(Exception):
    """The LLM failed, timed out or stalled; `reason` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class CompletionStats:
    """What a streamed completion cost and how long it took (filled while streaming)."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float = 0.0
    finish_reason: str | None = None


def ensure_local_provider(settings: Settings) -> None:
    """Register the in-process model with litellm when it is the configured one."""
    if (settings.llm_model or "").startswith("ragledger-local/"):
        from ragledger.services.local_llm import register_local_llm

        register_local_llm(settings)


async def stream_completion(
    messages: Sequence[dict[str, str]], settings: Settings, stats: CompletionStats
) -> AsyncGenerator[str, None]:
    """Yield text deltas of one completion; raise LLMError on failure, timeout or stall."""
    if not settings.llm_model:
        raise LLMError("no_model", "no language model is configured (LLM_MODEL)")
    ensure_local_provider(settings)
    started = time.perf_counter()
    deadline = started + settings.llm_timeout_s
    try:
        async with asyncio.timeout(settings.llm_stall_timeout_s):
            response = await litellm.acompletion(
                model=settings.llm_model,
                messages=list(messages),
                stream=True,
                max_tokens=settings.llm_max_tokens,
                temperature=settings.llm_temperature,
                timeout=settings.llm_timeout_s,
                num_retries=settings.llm_num_retries,
                api_base=settings.llm_api_base,
                api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
                stream_options={"include_usage": True},
            )
        iterator = response.__aiter__()
        while True:
            budget = min(settings.llm_stall_timeout_s, deadline - time.perf_counter())
            if budget <= 0:
                raise TimeoutError
            try:
                async with asyncio.timeout(budget):
                    chunk = await iterator.__anext__()
            except StopAsyncIteration:
                break
            usage = getattr(chunk, "usage", None)
            if usage:
                stats.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                stats.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            for choice in getattr(chunk, "choices", None) or []:
                if choice.finish_reason:
                    stats.finish_reason = choice.finish_reason
                delta = getattr(choice.delta, "content", None) if choice.delta else None
                if delta:
                    if stats.ttft_ms is None:
                        stats.ttft_ms = (time.perf_counter() - started) * 1000
                    yield delta
    except TimeoutError:
        raise LLMError(
            "timeout",
            "the language model did not answer in time"
            if stats.ttft_ms is None
            else "the language model stopped sending the answer",
        ) from None
    except LLMError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise LLMError("llm_error", f"the language model failed: {type(exc).__name__}") from exc
    finally:
        stats.total_ms = (time.perf_counter() - started) * 1000
        metrics.llm_duration.labels(settings.llm_model).observe(stats.total_ms / 1000)
        if stats.ttft_ms is not None:
            metrics.llm_time_to_first_token.labels(settings.llm_model).observe(stats.ttft_ms / 1000)
        log.info(
            "llm_completion",
            model=settings.llm_model,
            ttft_ms=round(stats.ttft_ms, 1) if stats.ttft_ms is not None else None,
            llm_ms=round(stats.total_ms, 1),
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            finish_reason=stats.finish_reason,
        )
