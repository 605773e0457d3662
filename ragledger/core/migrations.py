"""Alembic from code: upgrade to head, and refuse to run on a schema that is behind."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SchemaBehindError(RuntimeError):
    """The database schema is older than this code."""


def alembic_config() -> Config:
    """Alembic configuration pointing at the project's migrations, wherever the cwd is."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    return config


def head_revision() -> str:
    """The newest migration this code ships."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return heads[0]


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every pending migration through `engine` (it must connect as the schema owner)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        # Two processes starting at once: the second waits, then finds nothing to do.
        await conn.execute(text("SELECT pg_advisory_xact_lock(21068, 0)"))
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None before the first migration)."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Raise SchemaBehindError, naming the fix, unless the database is at head."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaBehindError(
            f"database schema is at {current or 'nothing'}, this code needs {head}: "
            "run `uv run ragledger db upgrade` (or set AUTO_MIGRATE=true)"
        )
