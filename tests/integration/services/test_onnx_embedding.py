"""The ONNX Runtime path of the bundled model gives torch's vectors, exported once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragledger.services.embedding import LocalEmbedder, local_model_dir
from ragledger.services.onnx_embedding import OnnxEmbedder, exported_model_path, token_batches

TEXTS = [
    "How many vacation days do employees get?",
    "Annual leave allowance for staff",
    "The default level is WARNING, which means that only events of this level and above "
    "will be tracked, unless the logging package is configured to do otherwise. " * 6,
    "x",
    "Travel expenses are reimbursed within 30 days of the claim.",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


async def test_fp32_vectors_match_torch(onnx_cache: Path) -> None:
    torch_embedder = LocalEmbedder(local_model_dir(), batch_size=8, torch_threads=0)
    onnx_embedder = OnnxEmbedder(local_model_dir(), cache_dir=onnx_cache, batch_size=8, threads=0)
    try:
        reference = await torch_embedder.embed(TEXTS)
        vectors = await onnx_embedder.embed(TEXTS)
    finally:
        await torch_embedder.aclose()
        await onnx_embedder.aclose()
    assert vectors.shape == reference.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    cosine = np.sum(vectors * reference, axis=1)
    assert cosine.min() >= 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Exported once, under the hash of the model files, in the cache directory.
    info = onnx_embedder.info
    assert exported_model_path(onnx_cache, info.files_sha256, quantized=False).exists()
    assert info.name == torch_embedder.info.name


async def test_the_export_is_reused(onnx_cache: Path) -> None:
    embedder = OnnxEmbedder(local_model_dir(), cache_dir=onnx_cache, batch_size=8, threads=0)
    await embedder.warm_up()
    path = exported_model_path(onnx_cache, embedder.info.files_sha256, quantized=False)
    stamp = path.stat().st_mtime_ns
    second = OnnxEmbedder(local_model_dir(), cache_dir=onnx_cache, batch_size=8, threads=0)
    await second.warm_up()
    assert path.stat().st_mtime_ns == stamp
    await embedder.aclose()
    await second.aclose()


async def test_int8_vectors_stay_close(onnx_cache: Path) -> None:
    plain = OnnxEmbedder(local_model_dir(), cache_dir=onnx_cache, batch_size=8, threads=0)
    int8 = OnnxEmbedder(
        local_model_dir(), cache_dir=onnx_cache, batch_size=8, threads=0, quantized=True
    )
    try:
        cosine = np.sum((await plain.embed(TEXTS)) * (await int8.embed(TEXTS)), axis=1)
    finally:
        await plain.aclose()
        await int8.aclose()
    # int8 weights move vectors more than fp32 does; per-channel, reduced-range weights
    # kept every chunk of the evaluation corpus at cosine >= 0.98 (per-tensor: 0.90).
    # Whether that costs recall is measured by bench/embedding_backends.py.
    assert cosine.min() >= 0.97


def test_token_batches_keep_padding_within_the_budget() -> None:
    lengths = [256, 10, 12, 250, 11, 9, 256, 30]
    batches = token_batches(lengths, budget=512, max_size=64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * width <= 512
    # The long texts go two at a time, the short ones four to a pass.
    assert [len(b) for b in batches] == [2, 2, 4]
