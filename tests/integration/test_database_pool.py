"""Without pre-ping, a connection the server dropped fails one use, then the pool recovers."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ragledger.core.database import create_engine


async def _drop_app_connections(db) -> None:
    async with db.owner_engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name = 'pool-test'"
            )
        )
        await conn.commit()


@pytest.mark.parametrize("pre_ping", [False, True])
async def test_a_dropped_connection_costs_at_most_one_failed_use(db, pre_ping: bool) -> None:
    engine = create_engine(
        db.url,
        role="ragledger_app",
        pool_size=2,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        connect_args={"server_settings": {"application_name": "pool-test"}},
    )
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
        await _drop_app_connections(db)
        if pre_ping:
            # The ping finds the dead connection and replaces it before use.
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        else:
            with pytest.raises(DBAPIError):
                async with engine.connect() as conn:
                    await conn.scalar(text("SELECT 1"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_user")) == "ragledger_app"
    finally:
        await engine.dispose()
