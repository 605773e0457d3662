"""One real `ragledger serve` on loopback and one headless Chromium for all browser modules.

The server runs on its own copy of the migrated template database, with the in-process
subscriber runner, the bundled embedding model and the OpenAI-compatible fake as its
LLM (so answers stream over a socket). Starting it costs about 35 s of a loaded CI box
(mostly importing the app), so the browser modules share one (`console_server`, for the
session); each module gets its own accounts, groups and documents (`console`), so that
what one module asks, uploads or lists is invisible to the others' assertions. The
browser is Debian's chromium, driven by Playwright; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from ragledger.core.database import create_app_engine, create_engine, create_sessionmaker
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from tests.conftest import _plain, _with_database
from tests.e2e.conftest import Account, make_account
from tests.e2e.test_cli import RAGLEDGER, _env, _free_port
from tests.fakes.openai_server import FakeOpenAI

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"


@dataclass
class ServedConsole:
    """The running server, its database and its fake LLM (one per test session)."""

    base: str
    db: Database
    fake: FakeOpenAI
    log_path: Path


@dataclass
class ConsoleServer:
    """One module's view of the shared server: its own accounts, groups and documents."""

    base: str
    db: Database
    fake: FakeOpenAI
    log_path: Path
    tag: str
    accounts: dict[str, Account] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    documents: dict[str, str] = field(default_factory=dict)

    def api(self) -> httpx.AsyncClient:
        """An HTTP client on the server."""
        return httpx.AsyncClient(base_url=self.base, timeout=60)

    def output(self) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-4000:]


async def wait_for(condition, limit_s: float, what: str, interval: float = 0.3):
    """Poll `condition` until it returns something true (a deadline, not a timing check)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


async def api_token(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        "/api/v1/auth/jwt/login", data={"username": account.email, "password": account.password}
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def upload(
    client: httpx.AsyncClient, token: str, name: str, text: str, groups: list[str]
) -> str:
    title = text.splitlines()[0].lstrip("# ")
    response = await client.post(
        "/api/v1/documents",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": (name, text.encode(), "text/markdown")},
        data={"access_groups": groups, "title": title},
    )
    assert response.status_code == 202, response.text
    return response.json()["document_id"]


async def wait_indexed(client: httpx.AsyncClient, token: str, document_ids: list[str]) -> None:
    async def indexed() -> bool:
        for document_id in document_ids:
            response = await client.get(
                f"/api/v1/documents/{document_id}", headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 404:  # not projected yet
                return False
            state = response.json()["status"]
            assert state != "failed", response.text
            if state != "indexed":
                return False
        return True

    await wait_for(indexed, 240, "documents to be indexed", interval=1)


LEAVE_POLICY = """# Annual leave policy

## Entitlement

Employees get 25 days of paid annual leave per calendar year. Leave is booked in the
HR portal at least two weeks ahead and approved by the line manager.

## Carry-over

Up to five unused days carry over to the next year and expire on 31 March.
"""
MERGER_PLAN = """# Falcon merger plan

## Valuation

The finance team values the acquisition target at 42 million euros; the board decides
in the spring. Confidential to the finance group.
"""


@pytest.fixture(scope="session")
async def console_server(
    pg_admin_url: str,
    template_database: str,
    onnx_cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServedConsole]:
    """A served console, shared by the browser modules of the session."""
    tmp = tmp_path_factory.mktemp("console")
    data_dir = tmp / "data"
    data_dir.mkdir()
    # The session's one ONNX export of the embedding model (written whole by rename).
    (data_dir / "onnx").symlink_to(onnx_cache_dir, target_is_directory=True)
    name = f"ragledger_console_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(_plain(pg_admin_url))
    await admin_conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    database_url = _with_database(pg_admin_url, name)
    settings = Settings(database_url=database_url, data_dir=data_dir)
    engine = create_app_engine(database_url, settings)
    database = Database(
        url=database_url,
        engine=engine,
        owner_engine=create_engine(database_url, pool_size=1, max_overflow=2),
        sessionmaker=create_sessionmaker(engine),
    )
    fake = FakeOpenAI().start()
    port = _free_port()
    env = _env(
        DATABASE_URL=database_url,
        REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        REDIS_KEY_PREFIX=f"ragledger-console:{uuid.uuid4().hex[:8]}:",
        RAGLEDGER_DATA_DIR=str(data_dir),
        SECRET_KEY="console-browser-test-secret-key-0123456789",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        LLM_MODEL="openai/fake-chat",
        LLM_API_BASE=fake.base_url,
        LLM_API_KEY=fake.api_key,
        LLM_NUM_RETRIES="0",
        RUNNER_POLL_INTERVAL_S="0.2",
        RATE_LIMIT_UPLOAD_PER_USER="1000/hour",
        RATE_LIMIT_QUESTIONS_PER_USER="1000/minute",
        LOG_FORMAT="console",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(  # noqa: ASYNC220  (started once, not awaited)
        [RAGLEDGER, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ServedConsole(f"http://127.0.0.1:{port}", database, fake, log_path)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:

            async def healthy() -> bool:
                assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
                try:
                    return (await client.get("/api/v1/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, 240, "the server to answer health")
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        fake.stop()
        await database.dispose()
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_conn.close()


@pytest.fixture(scope="module")
async def console(console_server: ServedConsole, request: pytest.FixtureRequest) -> ConsoleServer:
    """This module's employee (hr), auditor and admin, and its two documents (hr, finance).

    Names carry the module's tag: the modules share the server, never their data.
    """
    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_console_")
    tag = re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-")
    shared = console_server
    server = ConsoleServer(shared.base, shared.db, shared.fake, shared.log_path, tag)
    server.groups = {"hr": f"hr-{tag}", "finance": f"finance-{tag}"}
    database = shared.db
    server.accounts = {
        "employee": await make_account(
            database, f"emma.{tag}@example.com", "employee", (server.groups["hr"],)
        ),
        "auditor": await make_account(database, f"aude.{tag}@example.com", "auditor"),
        "admin": await make_account(database, f"adam.{tag}@example.com", "admin"),
    }
    async with server.api() as client:
        token = await api_token(client, server.accounts["admin"])
        server.documents = {
            "leave": await upload(client, token, "leave.md", LEAVE_POLICY, [server.groups["hr"]]),
            "merger": await upload(
                client, token, "falcon.md", MERGER_PLAN, [server.groups["finance"]]
            ),
        }
        await wait_indexed(client, token, list(server.documents.values()))
    return server


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless chromium."""
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240  (one stat, before any I/O)
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


class Shots:
    """Saves numbered screenshots of a scenario under tests/artifacts/console/."""

    def __init__(self, scenario: str) -> None:
        self.scenario = re.sub(r"[^a-z0-9_]+", "_", scenario.lower())
        self.count = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def take(self, page: Page, what: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.scenario}-{self.count:02d}-{what}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


async def sign_in(page: Page, server: ConsoleServer, who: str) -> None:
    """Sign in through the form."""
    account = server.accounts[who]
    await page.goto(f"{server.base}/sign-in")
    await page.get_by_label("Email").fill(account.email)
    await page.get_by_label("Password").fill(account.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{server.base}/")
