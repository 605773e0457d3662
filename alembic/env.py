"""Alembic environment: async engine, or a connection handed in by ragledger itself."""

import asyncio

from sqlalchemy import Connection

from alembic import context
from ragledger.core.database import create_engine
from ragledger.core.settings import get_settings
from ragledger.models import Base

target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    from ragledger.core.embedded_postgres import start_embedded_postgres

    settings = get_settings()
    url = settings.database_url or start_embedded_postgres(settings.data_dir).owner_url
    engine = create_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(run_with_connection)
        await connection.commit()
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_with_connection(connection)
else:
    asyncio.run(run_async())
