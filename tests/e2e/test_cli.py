"""The `ragledger` command as a user runs it: a real process, real exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ragledger.events import store
from ragledger.events.envelope import NewEvent
from tests.ledger_tampering import tamper

RAGLEDGER = str(Path(sys.executable).parent / "ragledger")
SHIPPED_DATASET = Path(__file__).resolve().parents[2] / "eval" / "python-docs.jsonl"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        {"LOG_FORMAT": "json", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LLM_WARM_UP": "false"},
        **extra,
    )
    return env


async def _run(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [RAGLEDGER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


async def test_ledger_verify_exit_codes(db, database_url: str, tmp_path: Path) -> None:
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path))
    async with db.sessionmaker() as session, session.begin():
        for i in range(5):
            await store.append(session, "s", [NewEvent("A", {"i": i})])
    ok = await _run("ledger", "verify", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "ledger intact: 5 events, head 5" in ok.stdout

    await tamper(db, """UPDATE events SET payload = '{"i": 7}' WHERE position = 3""")
    broken = await _run("ledger", "verify", env=env)
    assert broken.returncode == 1
    assert "ledger BROKEN at position 3" in broken.stderr


async def test_projections_status_and_rebuild(db, database_url: str, tmp_path: Path) -> None:
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path))
    async with db.sessionmaker() as session, session.begin():
        await store.append(session, "document-1", [NewEvent("A", {}), NewEvent("B", {})])
    status = await _run("projections", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "streams" in status.stdout
    assert "lag=2" in status.stdout

    rebuilt = await _run("projections", "rebuild", "streams", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "streams rebuilt from the ledger" in rebuilt.stdout
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT version FROM stream_catalog")) == 2

    unknown = await _run("projections", "rebuild", "nope", env=env)
    assert unknown.returncode == 2
    assert "unknown subscriber 'nope'" in unknown.stderr


async def test_serve_refuses_a_database_that_is_behind(tmp_path: Path, pg_admin_url: str) -> None:
    # The admin database `postgres` was never migrated.
    env = _env(DATABASE_URL=pg_admin_url, RAGLEDGER_DATA_DIR=str(tmp_path))
    result = await _run("serve", "--port", "1", env=env)
    assert result.returncode != 0
    assert "ragledger db upgrade" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
async def test_quick_start_serves_on_the_embedded_database(tmp_path: Path) -> None:
    """`ragledger serve` with no DATABASE_URL starts PostgreSQL itself and answers health."""
    port = _free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(  # noqa: ASYNC220
        [RAGLEDGER, "serve", "--port", str(port)],
        env=_env(RAGLEDGER_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/api/v1/health")
                    body = response.json()
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.3)
        assert body is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        # Anonymous: the status only (the ledger head and subscribers are for auditors).
        assert body == {"status": "ok"}
        assert (data_dir / "postgres" / "PG_VERSION").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, output
    assert "app_stopped" in output
    # The last process using the embedded server stopped it.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


async def test_ingest_a_folder_waits_for_indexing_and_reports_each_file(
    db, database_url: str, tmp_path: Path
) -> None:
    from tests import fixtures_documents as docs

    folder = tmp_path / "policies"
    (folder / "hr").mkdir(parents=True)
    (folder / "onboarding.md").write_bytes(docs.markdown_bytes())
    (folder / "hr" / "hours.txt").write_bytes(docs.plain_text_bytes())
    (folder / "hr" / "photo.png").write_bytes(docs.png_bytes())
    (folder / ".hidden.txt").write_text("skipped")
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    result = await _run("ingest", "policies", "--group", "hr", env=env, cwd=tmp_path)
    # One file was refused (not a supported type), so the exit code says so.
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("indexed") >= 2
    assert "rejected" in result.stderr
    assert "policies/hr/photo.png" in result.stderr
    assert ".hidden.txt" not in result.stderr
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT filename, status, access_groups FROM documents"))
        ).all()
    assert sorted((r.filename, r.status, r.access_groups) for r in rows) == [
        ("hours.txt", "indexed", ["hr"]),
        ("onboarding.md", "indexed", ["hr"]),
    ]


async def test_ingest_public_marks_the_files_public_and_access_is_written_at_once(
    db, database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "menu.md").write_text("# Menu\n\nSoup on Mondays.\n")
    (tmp_path / "board.md").write_text("# Board\n\nMerger notes.\n")
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path / "data"))
    public = await _run("ingest", "menu.md", "--public", "--no-wait", env=env, cwd=tmp_path)
    closed = await _run("ingest", "board.md", "--no-wait", env=env, cwd=tmp_path)
    assert (public.returncode, closed.returncode) == (0, 0), public.stderr + closed.stderr
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT v.filename, a.public, a.access_groups FROM document_access AS a "
                    "JOIN events AS e ON e.payload->>'document_id' = a.document_id::text "
                    "AND e.event_type = 'DocumentUploaded' "
                    "JOIN LATERAL (SELECT e.payload->>'filename' AS filename) AS v ON true"
                )
            )
        ).all()
    assert sorted(tuple(r) for r in rows) == [("board.md", False, []), ("menu.md", True, [])]


@pytest.mark.slow
async def test_ask_streams_the_answer_then_the_citations(
    db, settings, database_url: str, tmp_path: Path, fake_openai
) -> None:
    from tests.e2e.conftest import make_account
    from tests.e2e.test_documents import drain
    from tests.e2e.test_questions import LEAVE

    await make_account(db, "hana@example.com", "employee", ("hr",))
    (tmp_path / "leave.md").write_bytes(LEAVE)
    env = _env(
        DATABASE_URL=database_url,
        RAGLEDGER_DATA_DIR=str(tmp_path / "data"),
        LLM_MODEL="openai/fake-chat",
        LLM_API_BASE=fake_openai.base_url,
        LLM_API_KEY=fake_openai.api_key,
    )
    assert (
        await _run("ingest", "leave.md", "--group", "hr", env=env, cwd=tmp_path)
    ).returncode == 0
    fake_openai.chat.answer = "Thirty days [1]."
    result = await _run(
        "ask", "How many days of annual leave?", "--as", "hana@example.com", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Thirty days [1].")
    assert "[1] leave (version 1) Leave policy > Annual leave" in result.stdout
    assert "answer id: " in result.stdout
    unknown = await _run("ask", "x?", "--as", "nobody@example.com", env=env)
    assert unknown.returncode == 1
    assert "no active user" in unknown.stderr
    await drain(db, settings)


def _no_log_records(output: str) -> None:
    """No JSON log record and no line of the embedded PostgreSQL's wheel."""
    for line in output.splitlines():
        assert not line.lstrip().startswith("{"), line
        assert "remaining pids" not in line, line


async def test_commands_print_human_output_and_log_only_when_asked(
    db, settings, database_url: str, tmp_path: Path
) -> None:
    from tests.e2e.conftest import make_account
    from tests.e2e.test_documents import drain
    from tests.e2e.test_questions import LEAVE

    await make_account(db, "hana@example.com", "employee", ("hr",))
    (tmp_path / "leave.md").write_bytes(LEAVE)
    # No LLM_MODEL: the answer is extractive. LOG_FORMAT=json is for services only.
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path / "data"))
    ingest = await _run("ingest", "leave.md", "--group", "hr", env=env, cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr
    assert "indexed" in ingest.stderr, "the progress and the summary go to stderr"
    assert ingest.stdout == ""
    _no_log_records(ingest.stderr)
    assert "[info" not in ingest.stderr, "no log record below WARNING without --verbose"

    # --verbose: the logs, readable, on stderr only; the result alone on stdout.
    upgraded = await _run("--verbose", "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == "database is at the latest schema\n"
    assert "database_migrated" in upgraded.stderr
    _no_log_records(upgraded.stderr)
    quiet = await _run("db", "upgrade", env=env)
    assert (quiet.stdout, quiet.stderr) == (upgraded.stdout, "")

    question = "How many days of annual leave do employees get?"
    asked = await _run("ask", question, "--as", "hana@example.com", env=env)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith(
        "Employees get thirty days of annual leave per calendar year. [1]"
    )
    assert "[1] leave (version 1) Leave policy > Annual leave" in asked.stdout
    # Without --verbose nothing is logged at all (no warning was due).
    assert asked.stderr == ""
    _no_log_records(asked.stdout)
    await drain(db, settings)


async def test_the_embedded_database_leaves_no_log_line_behind(tmp_path: Path) -> None:
    env = _env(RAGLEDGER_DATA_DIR=str(tmp_path / "data"))
    created = await asyncio.to_thread(
        subprocess.run,
        [RAGLEDGER, "users", "create", "olga@example.com", "--role", "admin", "--password-stdin"],
        env=env,
        input="a long enough passphrase\n",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created olga@example.com (admin)")
    assert created.stderr == ""
    listed = await _run("users", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["olga@example.com", "admin", "active", "-"]
    assert listed.stderr == ""


async def test_eval_refuses_a_mode_it_cannot_run_before_touching_the_ledger(
    db, database_url: str, tmp_path: Path
) -> None:
    dataset = str(SHIPPED_DATASET)
    env = _env(DATABASE_URL=database_url, RAGLEDGER_DATA_DIR=str(tmp_path))
    env.pop("LLM_MODEL", None)
    async with db.sessionmaker() as session:
        before = await session.scalar(text("SELECT count(*) FROM events"))

    # Generative answers with no model: exit 2 and what to set, not 119 "no_model" rows.
    no_model = await _run("eval", dataset, "--mode", "generative", env=env)
    assert no_model.returncode == 2
    assert "--mode generative needs a language model: set LLM_MODEL" in no_model.stderr
    unknown = await _run("eval", dataset, "--mode", "poetic", env=env)
    assert unknown.returncode == 2
    assert "--mode must be one of extractive, generative" in unknown.stderr

    async with db.sessionmaker() as session:
        assert await session.scalar(text("SELECT count(*) FROM events")) == before
