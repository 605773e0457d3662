"""`LocalLLMProvider`: the local model as litellm's custom provider `ragledger-local`."""

from __future__ import annotations

# Before litellm's import: otherwise it fetches its cost map from GitHub at import time.
import ragledger.core.litellm_cost_map  # noqa: F401

# isort: split

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final, Literal

from litellm import CustomLLM
from litellm.llms.custom_llm import CustomLLMError
from litellm.types.llms.openai import ChatCompletionUsageBlock
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage

from ragledger.services.local_llm.definitions import (
    DEFAULT_MAX_TOKENS,
    LOCAL_LLM_MODEL,
    Completion,
    FinishReason,
    GenerationParams,
    GenerationStats,
    LocalLLMError,
    LocalLLMRequestError,
)
from ragledger.services.local_llm.engine import LocalLLM

# Parameters that change what the answer must look like and that the local model
# cannot honour; refusing them is better than an answer that silently ignores them.
_UNSUPPORTED_PARAMS: Final = ("stop", "tools", "functions", "tool_choice", "response_format")


def generation_params(optional_params: Mapping[str, Any]) -> GenerationParams:
    """GenerationParams from the OpenAI-style parameters litellm passes a provider."""
    refused = [name for name in _UNSUPPORTED_PARAMS if optional_params.get(name)]
    if refused:
        raise LocalLLMRequestError(f"{LOCAL_LLM_MODEL} does not support {', '.join(refused)}")
    if optional_params.get("n") not in (None, 1):
        raise LocalLLMRequestError(f"{LOCAL_LLM_MODEL} generates one choice (n=1)")
    max_tokens = optional_params.get("max_tokens")
    if max_tokens is None:
        max_tokens = optional_params.get("max_completion_tokens")
    temperature = optional_params.get("temperature")
    top_p = optional_params.get("top_p")
    seed = optional_params.get("seed")
    try:
        return GenerationParams(
            max_tokens=int(max_tokens) if max_tokens is not None else DEFAULT_MAX_TOKENS,
            temperature=float(temperature) if temperature is not None else 0.0,
            top_p=float(top_p) if top_p is not None else None,
            seed=int(seed) if seed is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise LocalLLMRequestError(f"invalid generation parameter: {exc}") from exc


def _usage(stats: GenerationStats) -> ChatCompletionUsageBlock:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def _openai_finish_reason(reason: FinishReason) -> Literal["stop", "length"]:
    # "cancelled" only reaches a consumer that already left; OpenAI has no such value.
    return "length" if reason == "length" else "stop"


def _provider_error(exc: LocalLLMError) -> CustomLLMError:
    """The litellm error for a local failure: 400 for the caller's mistakes, else 500."""
    status = 400 if isinstance(exc, LocalLLMRequestError) else 500
    return CustomLLMError(status_code=status, message=str(exc))


def _text_chunk(text: str) -> GenericStreamingChunk:
    return GenericStreamingChunk(
        text=text, is_finished=False, finish_reason="", usage=None, index=0, tool_use=None
    )


def _final_chunk(stats: GenerationStats) -> GenericStreamingChunk:
    return GenericStreamingChunk(
        text="",
        is_finished=True,
        finish_reason=_openai_finish_reason(stats.finish_reason),
        usage=_usage(stats),
        index=0,
        tool_use=None,
    )


class LocalLLMProvider(CustomLLM):
    """litellm's custom provider `ragledger-local`, answering with a LocalLLM.

    litellm calls these methods with keyword arguments only; the ones not used here
    (api_base, api_key, headers, timeout, client, logging_obj, ...) arrive in kwargs.
    The caller's timeout is enforced by the caller (it ends the stream, which stops
    the generation), so it is not duplicated here.
    """

    def __init__(self, llm: LocalLLM) -> None:
        super().__init__()
        self.llm = llm

    def completion(  # type: ignore[override]  # litellm passes keywords
        self,
        model: str,
        messages: list[Any],
        *,
        model_response: ModelResponse,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> ModelResponse:
        """Answer synchronously (litellm.completion)."""
        try:
            answer = self.llm.complete_sync(messages, generation_params(optional_params))
        except LocalLLMError as exc:
            raise _provider_error(exc) from exc
        return _fill_response(model_response, model, answer)

    async def acompletion(  # type: ignore[override]  # litellm passes keywords
        self,
        model: str,
        messages: list[Any],
        *,
        model_response: ModelResponse,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> ModelResponse:
        """Answer without streaming (litellm.acompletion)."""
        try:
            answer = await self.llm.complete(messages, generation_params(optional_params))
        except LocalLLMError as exc:
            raise _provider_error(exc) from exc
        return _fill_response(model_response, model, answer)

    def streaming(  # type: ignore[override]  # litellm passes keywords
        self,
        model: str,
        messages: list[Any],
        *,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> Iterator[GenericStreamingChunk]:
        """Stream synchronously (litellm.completion(stream=True))."""
        try:
            params = generation_params(optional_params)
            stream = self.llm.stream_sync(messages, params)
            try:
                for chunk in stream:
                    yield _final_chunk(chunk.stats) if chunk.stats else _text_chunk(chunk.text)
            finally:
                stream.close()
        except LocalLLMError as exc:
            raise _provider_error(exc) from exc

    async def astreaming(  # type: ignore[override]  # litellm passes keywords
        self,
        model: str,
        messages: list[Any],
        *,
        optional_params: dict[str, Any],
        **kwargs: Any,
    ) -> AsyncIterator[GenericStreamingChunk]:
        """Stream text deltas, then a final chunk with finish_reason and usage."""
        try:
            params = generation_params(optional_params)
            stream = self.llm.stream(messages, params)
            try:
                async for chunk in stream:
                    yield _final_chunk(chunk.stats) if chunk.stats else _text_chunk(chunk.text)
            finally:
                # Close the inner generator now rather than at garbage collection, so the
                # worker hears at once that nobody reads any more.
                await stream.aclose()
        except LocalLLMError as exc:
            raise _provider_error(exc) from exc


def _fill_response(model_response: ModelResponse, model: str, answer: Completion) -> ModelResponse:
    choice = model_response.choices[0]
    choice.message.content = answer.text
    choice.finish_reason = _openai_finish_reason(answer.stats.finish_reason)
    model_response.model = model
    model_response.created = int(time.time())
    usage = _usage(answer.stats)
    # litellm sets `usage` on a ModelResponse at run time; its class does not declare it.
    model_response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        total_tokens=usage["total_tokens"],
    )
    return model_response
