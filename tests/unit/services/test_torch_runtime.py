"""The set-up both in-process models share: offline Hugging Face, torch's thread count."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from structlog.testing import capture_logs

from ragledger.services.torch_runtime import apply_torch_threads, set_offline_environment


def test_offline_environment_is_a_default_an_operator_can_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    set_offline_environment()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0", "an explicit setting is kept"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_thread_count_is_set_from_the_worker_and_a_conflict_is_warned() -> None:
    original = torch.get_num_threads()
    seen: list[int] = []

    def in_worker(threads: int) -> None:
        apply_torch_threads(threads)
        seen.append(torch.get_num_threads())

    try:
        in_worker(1)  # whatever an earlier test applied, the count is now 1
        with capture_logs() as logs:
            for threads in (1, 2):
                worker = threading.Thread(target=in_worker, args=(threads,))
                worker.start()
                worker.join()
            apply_torch_threads(0)  # 0: leave torch's own choice alone
        assert seen == [1, 1, 2]
        warnings = [e for e in logs if e["event"] == "torch_threads_already_set"]
        assert warnings == [
            {
                "event": "torch_threads_already_set",
                "log_level": "warning",
                "applied": 1,
                "requested": 2,
            }
        ]
    finally:
        apply_torch_threads(original)
