"""The production layout as real processes: two API servers and two runners, one database.

`ragledger serve --no-runner` (one of them with two uvicorn workers) and two `ragledger
runner` processes share one PostgreSQL and one Redis. The first runner takes every
subscriber; the second stands by. The active runner is killed with SIGKILL in the middle
of ingestion; the standby takes over, the projections catch up, and each effect is in
the database once. Then an API process gets SIGTERM while an answer is streaming: the
stream ends with an `error` event and the ledger with `AnswerFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from ragledger.events import store
from ragledger.projections.registry import all_subscribers
from tests.e2e.conftest import login, make_account
from tests.e2e.test_cli import RAGLEDGER, _env, _free_port, _run

# Slow: several server processes (skip with -m "not slow").
pytestmark = pytest.mark.slow

DOCUMENT = """# Travel policy {n}

## Booking

Trips of type {n} are booked through the travel desk at least {n} days ahead. Economy
class is the rule for flights under six hours; the approver is the line manager.

## Expenses

Receipts for trip type {n} are uploaded within thirty days; meals are reimbursed up to
the daily allowance of the destination country.
"""


class Process:
    """A `ragledger` child process whose output goes to a file we can read while it runs."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("w")
        # A session of its own: cleanup kills the whole group, uvicorn's workers included.
        self.proc = subprocess.Popen(
            [RAGLEDGER, *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def records(self) -> list[dict]:
        """The JSON log lines written so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def subscribers(self, event: str) -> set[str]:
        """Subscribers named by log lines `event` (subscriber_active, subscriber_standby)."""
        return {r["subscriber"] for r in self.records() if r.get("event") == event}

    def active_subscribers(self) -> set[str]:
        return self.subscribers("subscriber_active")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextmanager
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait(timeout=30)


async def until(condition, limit_s: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


async def healthy(client: httpx.AsyncClient, base: str, headers=None) -> dict | None:
    try:
        response = await client.get(f"{base}/api/v1/health", headers=headers)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


async def stream_question(client, base, headers, question, on_first_token) -> list[tuple]:
    events: list[tuple] = []
    async with client.stream(
        "POST", f"{base}/api/v1/questions", headers=headers, json={"question": question}
    ) as response:
        assert response.status_code == 200, await response.aread()
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                if name == "token" and sum(1 for n, _ in events if n == "token") == 1:
                    on_first_token()
    return events


async def test_two_apis_and_two_runners_survive_a_runner_crash_and_a_sigterm(
    db, database_url: str, settings, tmp_path: Path, fake_openai
) -> None:
    data_dir = tmp_path / "data"
    env = _env(
        DATABASE_URL=database_url,
        REDIS_URL=settings.redis_url,
        REDIS_KEY_PREFIX=settings.redis_key_prefix,
        RAGLEDGER_DATA_DIR=str(data_dir),
        SECRET_KEY="multi-process-test-secret-key-0123456789",
        LLM_MODEL="openai/fake-chat",
        LLM_API_BASE=fake_openai.base_url,
        LLM_API_KEY=fake_openai.api_key,
        LLM_NUM_RETRIES="0",
        RUNNER_POLL_INTERVAL_S="0.2",
        RUNNER_STANDBY_RETRY_S="0.3",
        RUNNER_BACKOFF_INITIAL_S="0.1",
        SHUTDOWN_STREAM_GRACE_S="1",
        SSE_KEEPALIVE_S="1",
        RATE_LIMIT_UPLOAD_PER_USER="1000/hour",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ports = [_free_port(), _free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    subscriber_names = {s.name for s in all_subscribers(settings)}
    admin = await make_account(db, "adam@example.com", "admin")
    reader = await make_account(db, "hana@example.com", "employee", ("travel",))

    with processes() as running:
        api1 = Process("api1", ["serve", "--port", str(ports[0]), "--no-runner"], env, tmp_path)
        api2 = Process(
            "api2",
            ["serve", "--port", str(ports[1]), "--no-runner", "--workers", "2"],
            env,
            tmp_path,
        )
        runner1 = Process("runner1", ["runner"], env, tmp_path)
        running.extend([api1, api2, runner1])
        async with httpx.AsyncClient(timeout=60) as client:
            for base, process in zip(bases, (api1, api2), strict=True):

                async def up(base=base, process=process):
                    assert process.proc.poll() is None, process.output()
                    return await healthy(client, base)

                await until(up, 240, f"{process.name} to answer health")

            async def runner1_owns_everything():
                assert runner1.proc.poll() is None, runner1.output()
                return runner1.active_subscribers() == subscriber_names

            await until(runner1_owns_everything, 90, "runner1 to take every subscriber")
            runner2 = Process("runner2", ["runner"], env, tmp_path)
            running.append(runner2)

            # Tokens from one API process work on the other (shared secret and Redis).
            async with httpx.AsyncClient(base_url=bases[0], timeout=60) as first:
                for account in (admin, reader):
                    await login(first, account)

            document_ids = []
            for n in range(4):
                response = await client.post(
                    f"{bases[n % 2]}/api/v1/documents",
                    headers=admin.headers,
                    files={
                        "file": (
                            f"travel-{n}.md",
                            DOCUMENT.format(n=n).encode(),
                            "text/markdown",
                        )
                    },
                    data={"access_groups": ["travel"]},
                )
                assert response.status_code == 202, response.text
                document_ids.append(response.json()["document_id"])

            # The second runner stands by for every subscriber while runner1 is alive.
            async def runner2_stands_by():
                assert runner2.proc.poll() is None, runner2.output()
                return runner2.subscribers("subscriber_standby") == subscriber_names

            await until(runner2_stands_by, 240, "runner2 to stand by")
            assert runner2.active_subscribers() == set()

            # Kill the active runner while ingestion is (most likely) in flight.
            async def ingestion_started():
                return any(r.get("event") == "subscriber_batch" for r in runner1.records()) or (
                    time.monotonic() - started > 5
                )

            started = time.monotonic()
            await until(ingestion_started, 30, "runner1 to start working")
            runner1.proc.kill()
            assert runner1.proc.wait(timeout=30) == -signal.SIGKILL
            killed_at = time.monotonic()

            async def runner2_took_over():
                assert runner2.proc.poll() is None, runner2.output()
                return runner2.active_subscribers() == subscriber_names

            await until(runner2_took_over, 30, "runner2 to take over")
            takeover_s = time.monotonic() - killed_at
            assert takeover_s < 15, takeover_s

            async def all_indexed():
                for document_id in document_ids:
                    response = await client.get(
                        f"{bases[1]}/api/v1/documents/{document_id}", headers=admin.headers
                    )
                    assert response.status_code == 200, response.text
                    state = response.json()["status"]
                    assert state != "failed", response.text
                    if state != "indexed":
                        return False
                return True

            await until(all_indexed, 240, "every document to be indexed", interval=1)

            # A question through the two-worker API, answered by the fake LLM.
            fake_openai.chat.answer = "Book through the travel desk [1]."
            answered = await stream_question(
                client, bases[1], reader.headers, "How are trips booked?", lambda: None
            )
            assert answered[-1][0] == "done", answered

            # SIGTERM to api1 while an answer streams: error event, then a clean exit.
            fake_openai.chat.answer = " ".join(f"word{i}" for i in range(400))
            fake_openai.chat.tokens_per_second = 20
            cut = await stream_question(
                client,
                bases[0],
                reader.headers,
                "What is the expense policy for trips?",
                lambda: api1.proc.send_signal(signal.SIGTERM),
            )
            assert cut[-1][0] == "error", cut[-3:]
            assert cut[-1][1]["reason"] == "server_shutdown"
            assert api1.proc.wait(timeout=60) == 0, api1.output()
            shutdown_logs = {r.get("event") for r in api1.records()}
            assert {"shutdown_draining", "answer_cut_short", "app_stopped"} <= shutdown_logs

            # The projections catch up behind the surviving API.
            async def caught_up():
                body = await healthy(client, bases[1], admin.headers)
                return body and all(s["lag"] == 0 for s in body["subscribers"].values())

            await until(caught_up, 60, "every subscriber to reach the head")

            # Two workers, one /metrics: prometheus-client's multi-process mode.
            metrics = await client.get(f"{bases[1]}/metrics")
            assert metrics.status_code == 200
            families = {f.name for f in text_string_to_metric_families(metrics.text)}
            assert {"ragledger_http_requests", "ragledger_questions"} <= families

        assert runner2.stop() == 0, runner2.output()
        assert "runner_stopped" in {r.get("event") for r in runner2.records()}
        assert api2.stop() == 0, api2.output()

    # Nothing applied twice: one terminal ingestion event per document, chunks unique,
    # and one terminal event per question.
    async with db.sessionmaker() as session:
        events = await store.read_all(session, limit=100_000)
        chunk_rows = (
            await session.execute(
                text(
                    "SELECT document_id, version, chunk_index, count(*) FROM chunks "
                    "GROUP BY 1, 2, 3"
                )
            )
        ).all()
    per_document = Counter(
        (e.stream_id, e.event_type)
        for e in events
        if e.event_type
        in {"DocumentTextExtracted", "DocumentChunked", "ChunksEmbedded", "DocumentIndexed"}
    )
    assert len(per_document) == 4 * len(document_ids)
    assert set(per_document.values()) == {1}, per_document
    assert chunk_rows
    assert all(row[3] == 1 for row in chunk_rows)
    assert {str(row[0]) for row in chunk_rows} == set(document_ids)
    terminal = Counter(
        e.payload["question_id"]
        for e in events
        if e.event_type in {"AnswerGenerated", "AnswerFailed"}
    )
    asked = {e.payload["question_id"] for e in events if e.event_type == "QuestionAsked"}
    assert set(terminal) == asked
    assert set(terminal.values()) == {1}
    failed = [e for e in events if e.event_type == "AnswerFailed"]
    assert [e.payload["reason"] for e in failed] == ["server_shutdown"]
    assert failed[0].payload["partial_answer"].startswith("word0")

    verified = await _run("ledger", "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
