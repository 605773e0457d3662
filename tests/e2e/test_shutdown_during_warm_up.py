"""SIGTERM while the first start is still warming the local model ends the process at once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import RAGLEDGER, _env, _free_port

# Slow: a server process warming up the real local model (skip with -m "not slow").
pytestmark = pytest.mark.slow

# Only a hang guard: the exit itself takes a few seconds (the runner's batches, the
# database pool); the warm-up it must not wait for takes tens of seconds on first start.
EXIT_LIMIT_S = 20


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


# At once, and two seconds in: by then the load's daemon thread is importing torch and
# transformers, holding import locks that a destructor run during the interpreter's
# finalization waited on forever (CI, 2026-12-03), so the process must end without it.
@pytest.mark.parametrize("after_s", [0.0, 2.0])
async def test_sigterm_during_first_warm_up_does_not_wait_for_it(
    database_url: str, tmp_path: Path, after_s: float
) -> None:
    port = _free_port()
    log_path = tmp_path / "serve.log"
    data_dir = tmp_path / "data"  # fresh: no dequantized model cache yet
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220
            [RAGLEDGER, "serve", "--port", str(port)],
            env=_env(
                DATABASE_URL=database_url,
                RAGLEDGER_DATA_DIR=str(data_dir),
                LLM_WARM_UP="true",
                LLM_MODEL="ragledger-local/smollm2-135m-instruct",
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            async with httpx.AsyncClient() as client:
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/api/v1/health")
                        if response.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
            events = [r.get("event") for r in _records(log_path)]
            assert "app_started" in events, log_path.read_text()[-3000:]
            # The warm-up is under way and far from done.
            assert "local_llm_loaded" not in events
            await asyncio.sleep(after_s)
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(proc.wait, timeout=EXIT_LIMIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"serve still running {EXIT_LIMIT_S} s after SIGTERM: "
                    + log_path.read_text()[-3000:]
                ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    records = _records(log_path)
    events = [r.get("event") for r in records]
    assert code == 0, log_path.read_text()[-3000:]
    assert "app_stopped" in events
    # It exited without waiting: the model never finished loading, and it said so.
    assert "local_llm_loaded" not in events
    assert "warm_up_abandoned" in events
    assert "exit_without_finalization" in events
    # No half-written cache was published: a later start dequantizes again or uses a
    # complete cache, never a partial one.
    cache_dirs = [p for p in data_dir.rglob("*") if p.is_dir() and p.name.startswith(".")]
    assert not [p for p in cache_dirs if (p / "ragledger-cache.json").exists()]
