"""Connect to the database the settings name (starting the embedded one if needed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ragledger.core.database import create_app_engine, create_engine, create_sessionmaker
from ragledger.core.embedded_postgres import EmbeddedDatabase, start_embedded_postgres
from ragledger.core.migrations import ensure_schema_current, upgrade_to_head
from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Database:
    """The app's engine (restricted role) and the owner's engine (migrations, admin).

    `url` is the app's login (in embedded mode not the owner's, whose engine is apart).
    """

    url: str
    engine: AsyncEngine
    owner_engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        await self.owner_engine.dispose()


async def resolve_database_urls(settings: Settings) -> EmbeddedDatabase:
    """The owner's and the app's URLs: both DATABASE_URL, or the embedded server's logins.

    With DATABASE_URL the operator chose the login (ops/initdb: the restricted
    `ragledger_api` for the app, `ragledger db upgrade` run as the owner). The embedded
    server gets the same split: the schema owner migrates, the app logs in as a
    non-superuser that holds only ragledger_app's rights, even after RESET ROLE.
    """
    if settings.database_url:
        return EmbeddedDatabase(owner_url=settings.database_url, app_url=settings.database_url)
    return await asyncio.to_thread(start_embedded_postgres, settings.data_dir)


async def open_database(settings: Settings, *, migrate: bool | None = None) -> Database:
    """Connect, migrate (or refuse a schema that is behind), and return both engines."""
    urls = await resolve_database_urls(settings)
    url = urls.app_url
    owner = create_engine(urls.owner_url, pool_size=2, max_overflow=2)
    try:
        if settings.should_auto_migrate if migrate is None else migrate:
            await upgrade_to_head(owner)
            log.info("database_migrated")
        else:
            await ensure_schema_current(owner)
    except BaseException:
        await owner.dispose()
        raise
    engine = create_app_engine(url, settings)
    return Database(
        url=url, engine=engine, owner_engine=owner, sessionmaker=create_sessionmaker(engine)
    )
