"""`kill -9` in the middle of an answer: after a restart the question gets its outcome, once.

An API process streams an answer from a slow (fake) LLM and is killed with SIGKILL after
the first token: nothing in it can record the outcome. Two runner processes then start
(a restart, and a second process sweeping at the same time) with a short LLM time
limit; the question, older than that limit with no outcome, gets exactly one
`AnswerFailed` with reason `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from pathlib import Path

import httpx

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import run_until_caught_up
from ragledger.services.documents import upload
from tests.e2e.conftest import login, make_account
from tests.e2e.test_cli import _env, _free_port
from tests.e2e.test_multiprocess import Process, healthy, processes, stream_question, until

LEAVE = b"# Leave policy\n\n## Annual leave\n\nEmployees get thirty days of annual leave.\n"


async def _events(db, event_type: str) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={event_type}, limit=10_000)


async def test_a_question_cut_off_by_kill_9_fails_as_interrupted_once(
    db, settings, database_url: str, tmp_path: Path, fake_openai, monkeypatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    fake = {
        "EMBEDDING_MODEL": "openai/fake-embed",
        "EMBEDDING_API_BASE": fake_openai.base_url,
        "OPENAI_API_KEY": fake_openai.api_key,
        "LLM_MODEL": "openai/fake-chat",
        "LLM_API_BASE": fake_openai.base_url,
        "LLM_API_KEY": fake_openai.api_key,
        "LLM_NUM_RETRIES": "0",
    }
    local = settings.model_copy(
        update={"embedding_model": "openai/fake-embed", "embedding_api_base": fake_openai.base_url}
    )
    reader = await make_account(db, "hana@example.com", "employee", ("hr",))
    async with db.sessionmaker() as session, session.begin():
        await upload(
            session,
            content=LEAVE,
            filename="leave.md",
            title=None,
            access_groups=["hr"],
            max_bytes=1_000_000,
            actor_id=None,
            metadata=EventMetadata(actor_id="test", actor_role="admin"),
        )
    subscribers = all_subscribers(local)
    for _ in range(3):
        for subscriber in subscribers:
            assert await run_until_caught_up(db.engine, subscriber)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    api_env = _env(
        DATABASE_URL=database_url,
        RAGLEDGER_DATA_DIR=str(tmp_path / "data"),
        SECRET_KEY="interrupted-answer-test-secret-0123456789",
        **fake,
    )
    # The answer streams slowly, far within the API's own LLM time limit.
    fake_openai.chat.answer = " ".join(f"word{i}" for i in range(400))
    fake_openai.chat.tokens_per_second = 5
    with processes() as running:
        api = Process("api", ["serve", "--port", str(port), "--no-runner"], api_env, tmp_path)
        running.append(api)
        async with httpx.AsyncClient(timeout=60) as client:

            async def up():
                assert api.proc.poll() is None, api.output()
                return await healthy(client, base)

            await until(up, 240, "the API to answer health")
            async with httpx.AsyncClient(base_url=base, timeout=60) as first:
                await login(first, reader)

            def kill_api() -> None:
                os.killpg(api.proc.pid, signal.SIGKILL)

            # The connection dies with the process, as it should.
            with contextlib.suppress(httpx.HTTPError):
                await stream_question(client, base, reader.headers, "annual leave", kill_api)
        assert api.proc.wait(timeout=30) == -signal.SIGKILL
        [asked] = await _events(db, "QuestionAsked")
        assert await _events(db, "ContextRetrieved")
        assert [e.payload for e in await _events(db, "AnswerFailed")] == []
        assert [e.payload for e in await _events(db, "AnswerGenerated")] == []

        # The restart: two runner processes, both sweeping, with a 1 s LLM limit.
        runner_env = {
            **api_env,
            "LLM_TIMEOUT_S": "1",
            "INTERRUPTED_ANSWER_MARGIN_S": "0",
            "INTERRUPTED_ANSWER_SWEEP_INTERVAL_S": "0.5",
            "RUNNER_POLL_INTERVAL_S": "0.2",
        }
        runners = [Process(f"runner{n}", ["runner"], runner_env, tmp_path) for n in (1, 2)]
        running.extend(runners)

        async def settled():
            for runner in runners:
                assert runner.proc.poll() is None, runner.output()
            return await _events(db, "AnswerFailed")

        await until(settled, 240, "the interrupted question to get its outcome")
        # Both keep sweeping for a while: still one outcome.
        await asyncio.sleep(3)
        for runner in runners:
            assert runner.stop() == 0, runner.output()

    failed = await _events(db, "AnswerFailed")
    generated = await _events(db, "AnswerGenerated")
    terminal = Counter(e.payload["question_id"] for e in [*generated, *failed])
    assert terminal == {asked.payload["question_id"]: 1}
    assert failed[0].payload["reason"] == "interrupted"
    assert failed[0].metadata["actor_id"] == "system:interrupted_answers"
    assert failed[0].stream_id == asked.stream_id
