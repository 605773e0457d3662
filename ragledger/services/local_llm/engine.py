"""`LocalLLM`: the model loaded lazily and run on one worker thread per process.

The event loop never blocks on torch and two answers never compete for the same
cores; tokens reach async callers through an asyncio.Queue fed with
`call_soon_threadsafe`. When a consumer stops reading, a threading.Event checked after
every token ends the generation, so abandoned answers do not keep burning CPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import (
    AsyncGenerator,
    Callable,
    Generator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any

import structlog

from ragledger.core.worker_thread import DaemonWorker
from ragledger.services.local_llm.definitions import (
    CHATML_TEMPLATE,
    CONTEXT_WINDOW,
    LOCAL_LLM_MODEL,
    Completion,
    FinishReason,
    GenerationChunk,
    GenerationParams,
    GenerationStats,
    JobDone,
    LoadSource,
    LocalLLMError,
    LocalLLMRequestError,
    _Loaded,
)
from ragledger.services.local_llm.gguf_cache import (
    cache_matches,
    file_sha256,
    load_from_cache,
    load_from_gguf,
    write_cache,
)
from ragledger.services.local_llm.tokens import (
    IncrementalDecoder,
    end_token_ids,
    normalise_messages,
    stopping_on,
    token_sink,
)
from ragledger.services.torch_runtime import apply_torch_threads, set_offline_environment

log = structlog.get_logger(__name__)


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
    ) -> AsyncGenerator[GenerationChunk]:
        """Yield an answer as text deltas, then one empty chunk carrying the statistics.

        Closing the iterator early (aclose, cancellation, garbage collection) stops the
        generation after the token being computed.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[str | JobDone] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: str | JobDone) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:
                # The loop is closed: nobody is left to read, so stop generating.
                stop.set()

        future, stop = self._start(normalise_messages(messages), params, emit=emit, stop=stop)
        future.add_done_callback(lambda done: emit(JobDone(done)))
        try:
            while True:
                item = await items.get()
                if isinstance(item, JobDone):
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
    ) -> Generator[GenerationChunk]:
        """stream() for synchronous callers; closing the iterator stops the generation."""
        items: queue.SimpleQueue[str | JobDone] = queue.SimpleQueue()
        future, stop = self._start(normalise_messages(messages), params, emit=items.put)
        future.add_done_callback(lambda done: items.put(JobDone(done)))
        try:
            while True:
                item = items.get()
                if isinstance(item, JobDone):
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
                    initializer=apply_torch_threads,
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
        set_offline_environment()
        import torch
        from transformers.utils import logging as transformers_logging

        # Weight-loading progress bars are noise in JSON logs.
        transformers_logging.disable_progress_bar()
        if not self._gguf_path.is_file():
            raise LocalLLMError(f"GGUF file {self._gguf_path} does not exist")
        gguf_sha256 = file_sha256(self._gguf_path)
        source: LoadSource = "cache"
        pair = None
        cache_unreadable = False
        if cache_matches(self._cache_dir, gguf_sha256):
            try:
                pair = load_from_cache(self._cache_dir)
            # Whatever the failure (a truncated safetensors file raises its own error
            # type), the GGUF file is the source of truth and the cache is rebuilt.
            except Exception as exc:  # noqa: BLE001
                cache_unreadable = True
                log.warning(
                    "local_llm_cache_unreadable", path=str(self._cache_dir), error=repr(exc)
                )
        if pair is None:
            source = "gguf"
            pair = load_from_gguf(self._gguf_path)
        tokenizer, model = pair
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
            log.warning("local_llm_chat_template_missing", fallback="chatml")
        model = model.float().eval()
        if source == "gguf":
            write_cache(
                tokenizer,
                model,
                cache_dir=self._cache_dir,
                gguf_name=self._gguf_path.name,
                gguf_sha256=gguf_sha256,
                replace=cache_unreadable,
            )
        loaded = _Loaded(
            tokenizer=tokenizer,
            model=model,
            end_token_ids=end_token_ids(tokenizer),
            context_window=int(
                getattr(model.config, "max_position_embeddings", None) or CONTEXT_WINDOW
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

        decoder = IncrementalDecoder(tokenizer)
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
                    streamer=token_sink(on_token),
                    stopping_criteria=stopping_on(stop),
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
