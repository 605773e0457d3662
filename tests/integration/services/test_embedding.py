"""Embeddings with the real bundled model, and through litellm against a real HTTP fake."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime
import pytest
import torch
from transformers import AutoTokenizer, BertModel

from ragledger.core.settings import Settings
from ragledger.services.embedding import (
    LOCAL_MODEL_NAME,
    EmbeddingError,
    LocalEmbedder,
    get_embedder,
    local_model_dir,
    model_files_sha256,
)
from ragledger.services.litellm_embedding import LiteLLMEmbedder
from tests.fakes.openai_server import FakeOpenAI
from tests.off_loop import CallSpy, spy_on

QUESTION = "How many vacation days do employees get?"
PARAPHRASE = "Annual leave allowance for staff"
UNRELATED = "The server room temperature must stay below 25 degrees"


def _local_settings(**overrides: object) -> Settings:
    return Settings(embedding_model=LOCAL_MODEL_NAME, **overrides)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    """The process-wide local embedder, as the application gets it."""
    found = get_embedder(_local_settings(embedding_batch_size=32))
    assert isinstance(found, LocalEmbedder)
    return found


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _policy_texts(count: int) -> list[str]:
    """Distinct paragraph-sized texts, like the chunks of a policy document."""
    sentences = [
        "Employees accrue paid leave monthly and may carry over five days.",
        "Expense claims must be filed within thirty days with receipts attached.",
        "Remote work requires a secure connection and manager approval.",
        "Security incidents are reported to the on-call engineer at once.",
        "Training on data protection is mandatory for every new hire.",
    ]
    return [
        f"Section {i}. " + " ".join(sentences[(i + k) % len(sentences)] for k in range(6))
        for i in range(count)
    ]


async def test_local_embeddings_are_float32_unit_rows(embedder: LocalEmbedder) -> None:
    vectors = await embedder.embed([QUESTION, PARAPHRASE, UNRELATED, ""])

    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.device == ("cuda" if torch.cuda.is_available() else "cpu")


async def test_local_embeddings_are_deterministic(embedder: LocalEmbedder) -> None:
    texts = [QUESTION, PARAPHRASE, UNRELATED]

    first = await embedder.embed(texts)
    again = await embedder.embed(texts)
    # Alone, the text is padded differently than in a batch: equal up to float noise.
    alone = await embedder.embed([UNRELATED])

    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(alone[0], first[2], atol=1e-5)


async def test_rows_follow_input_order_across_batches(embedder: LocalEmbedder) -> None:
    texts = [*_policy_texts(40)[::-1], QUESTION]  # several batches, mixed lengths

    together = await embedder.embed(texts)
    one_by_one = np.vstack([await embedder.embed([text]) for text in texts[-3:]])

    np.testing.assert_allclose(together[-3:], one_by_one, atol=1e-5)


async def test_a_paraphrase_is_closer_than_an_unrelated_sentence(
    embedder: LocalEmbedder,
) -> None:
    question, paraphrase, unrelated = await embedder.embed([QUESTION, PARAPHRASE, UNRELATED])

    # Rows are unit vectors, so the dot product is the cosine similarity.
    assert float(question @ paraphrase) > float(question @ unrelated) + 0.2


async def test_inputs_are_truncated_at_256_word_pieces(embedder: LocalEmbedder) -> None:
    long_prefix = " ".join(["policy"] * 300)

    first, second = await embedder.embed([f"{long_prefix} apples", f"{long_prefix} rockets"])

    np.testing.assert_allclose(first, second, atol=1e-6)


async def test_empty_input_gives_an_empty_matrix(embedder: LocalEmbedder) -> None:
    vectors = await embedder.embed([])

    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_count_tokens_matches_the_model_tokenizer(embedder: LocalEmbedder) -> None:
    tokenizer = AutoTokenizer.from_pretrained(local_model_dir(), local_files_only=True)
    long_text = " ".join(_policy_texts(20))  # well past the model's 512-piece limit

    for text in ["", QUESTION, "Résumé: naïve café, 12.5% — ok?", long_text]:
        expected = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        assert embedder.count_tokens(text) == expected
    assert embedder.count_tokens(long_text) > 512


async def test_forward_passes_run_off_the_event_loop(
    embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await embedder.warm_up()
    # The torch backend's forward passes, or the ONNX backend's session runs.
    forward = spy_on(monkeypatch, BertModel, "forward")
    session_run = spy_on(monkeypatch, onnxruntime.InferenceSession, "run")
    vectors = await embedder.embed(_policy_texts(200))

    assert vectors.shape == (200, 384)
    # Every forward pass ran on the embedder's worker thread, none on the loop's: the
    # loop stays free for other requests (its lateness is measured by bench/loop_lag.py).
    passes = CallSpy(forward.calls + session_run.calls)
    assert passes.all_off_the_loop, passes.calls


async def test_the_model_is_loaded_once_per_process(embedder: LocalEmbedder) -> None:
    await embedder.embed([QUESTION])
    model = embedder.model
    assert model is not None
    info = embedder.info

    same = get_embedder(_local_settings(embedding_batch_size=8))
    await same.embed([PARAPHRASE])

    assert same is embedder
    assert embedder.model is model
    assert same.info == info
    assert info.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.dimensions == 384
    assert info.files_sha256 == model_files_sha256(local_model_dir())
    assert len(info.files_sha256) == 64


def test_the_files_hash_covers_names_and_contents(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00\x01")
    original = model_files_sha256(tmp_path)

    assert model_files_sha256(tmp_path) == original
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00\x02")
    changed_content = model_files_sha256(tmp_path)
    (tmp_path / "sub" / "b.bin").rename(tmp_path / "sub" / "c.bin")
    changed_name = model_files_sha256(tmp_path)

    assert len({original, changed_content, changed_name}) == 3


def _litellm_embedder(fake: FakeOpenAI, *, dimensions: int, batch_size: int = 2) -> LiteLLMEmbedder:
    return LiteLLMEmbedder(
        "openai/fake-embed",
        api_base=fake.base_url,
        api_key=fake.api_key,
        batch_size=batch_size,
        dimensions=dimensions,
        timeout_s=10,
        # litellm turns max_retries=0 into its default of 2 for OpenAI embeddings.
        max_retries=1,
    )


async def test_litellm_embedder_returns_normalised_vectors(fake: FakeOpenAI) -> None:
    fake.embeddings.dimensions = 16
    fake.require_api_key = fake.api_key
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    embedder = _litellm_embedder(fake, dimensions=16, batch_size=2)

    vectors = await embedder.embed(texts)

    assert vectors.shape == (5, 16)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for text, vector in zip(texts, vectors, strict=True):
        raw = FakeOpenAI.embedding_for(text, 16)
        np.testing.assert_allclose(vector, raw / np.linalg.norm(raw), atol=1e-6)
    sent = [request.body["input"] for request in fake.embedding_requests]
    assert sent == [["alpha", "beta"], ["gamma", "delta"], ["epsilon"]]
    assert embedder.info.name == "openai/fake-embed"
    assert embedder.info.dimensions == 16
    assert embedder.count_tokens(QUESTION) > 0


async def test_litellm_embedder_raises_on_a_server_error(fake: FakeOpenAI) -> None:
    fake.embeddings.error_status = 500
    embedder = _litellm_embedder(fake, dimensions=16)

    with pytest.raises(EmbeddingError, match="openai/fake-embed"):
        await embedder.embed(["alpha"])


async def test_litellm_embedder_raises_on_a_dimension_mismatch(fake: FakeOpenAI) -> None:
    fake.embeddings.dimensions = 8
    embedder = _litellm_embedder(fake, dimensions=16)

    with pytest.raises(EmbeddingError, match="8-dimensional vectors, configured for 16"):
        await embedder.embed(["alpha"])


def test_get_embedder_picks_litellm_for_other_models(fake: FakeOpenAI) -> None:
    settings = Settings(
        embedding_model="openai/fake-embed",
        embedding_api_base=fake.base_url,
        embedding_dimensions=16,
    )

    found = get_embedder(settings)

    assert isinstance(found, LiteLLMEmbedder)
    assert get_embedder(settings) is found
    assert found.info.dimensions == 16
