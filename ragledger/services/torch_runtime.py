"""Process-wide set-up shared by the in-process models (embedding and the local LLM).

Both run torch or Hugging Face code on their own worker thread; both must keep the
libraries off the network and set torch's thread count from that thread. One copy, so
that the two cannot drift apart (they had: one warned on a conflicting count, one not).
"""

from __future__ import annotations

import os
import threading

import structlog

log = structlog.get_logger(__name__)

_threads_lock = threading.Lock()
_threads_applied: int | None = None


def set_offline_environment() -> None:
    """Forbid Hugging Face libraries from reaching the network, before they are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # A tokenizers pool forked with the process deadlocks; our workers need none.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def apply_torch_threads(threads: int) -> None:
    """Set torch's intra-op thread count from the calling worker thread; 0 leaves it.

    torch.set_num_threads is process-wide for torch's own pool, but OpenMP keeps the
    count per calling thread, so each model's worker calls this as its initializer. Two
    models asking for different counts get the last one, with a warning.
    """
    global _threads_applied
    if threads <= 0:
        return
    import torch

    with _threads_lock:
        if _threads_applied is not None and _threads_applied != threads:
            log.warning("torch_threads_already_set", applied=_threads_applied, requested=threads)
        torch.set_num_threads(threads)
        _threads_applied = threads
