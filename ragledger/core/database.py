"""Async engines and sessions. The app's engine switches to the restricted role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ragledger.core.settings import Settings

_ROLE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


def to_async_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"unsupported database driver {parsed.drivername!r}; use postgresql://")
    return parsed.render_as_string(hide_password=False)


def to_asyncpg_dsn(url: str) -> str:
    """The same URL as a plain DSN for asyncpg.connect (LISTEN needs a raw connection)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    role: str | None = None,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_pre_ping: bool = True,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine; with `role`, every new connection runs `SET ROLE role` first."""
    engine = create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pool_pre_ping,
        **kwargs,
    )
    if role:
        if not set(role) <= _ROLE_NAME_CHARS:
            raise ValueError(f"invalid role name {role!r}")

        statement = f"SET ROLE {role}"

        @event.listens_for(engine.sync_engine, "connect")
        def _set_role(dbapi_connection: Any, _record: Any) -> None:
            # On the raw asyncpg connection, outside the adapter's transaction: through a
            # cursor, the SET ran inside the connection's first transaction, and a
            # rollback of that transaction (an error, or switching the connection to
            # autocommit) silently put it back to the login role.
            dbapi_connection.run_async(lambda raw: raw.execute(statement))

    return engine


def create_app_engine(url: str, settings: Settings) -> AsyncEngine:
    """The application's engine, restricted to INSERT and SELECT on the ledger."""
    return create_engine(
        url,
        role=settings.database_app_role or None,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=settings.database_pool_pre_ping,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on error."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def plan_each_query(session: AsyncSession) -> None:
    """Plan this transaction's statements for their actual parameters.

    asyncpg prepares every statement; after five runs PostgreSQL may switch to a cached
    generic plan that ignores the parameter values. For filters whose selectivity
    swings (one actor's events vs the large security stream), that plan was 20x slower
    (bench/audit.py: a large-stream page p95 274 ms with generic plans, 14 ms without).
    """
    await session.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
