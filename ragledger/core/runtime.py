"""Connect to the database the settings name (starting the embedded one if needed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ragledger.core.database import create_app_engine, create_engine, create_sessionmaker
from ragledger.core.embedded_postgres import start_embedded_postgres
from ragledger.core.migrations import ensure_schema_current, upgrade_to_head
from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Database:
    """The app's engine (restricted role) and the owner's engine (migrations, admin)."""

    url: str
    engine: AsyncEngine
    owner_engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        await self.owner_engine.dispose()


async def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded server's URL after starting it."""
    if settings.database_url:
        return settings.database_url
    return await asyncio.to_thread(start_embedded_postgres, settings.data_dir)


async def open_database(settings: Settings, *, migrate: bool | None = None) -> Database:
    """Connect, migrate (or refuse a schema that is behind), and return both engines."""
    url = await resolve_database_url(settings)
    owner = create_engine(url, pool_size=2, max_overflow=2)
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
