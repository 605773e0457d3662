"""Dependencies of the routes, as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.database import session_scope
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings


def get_database(request: Request) -> Database:
    """The process's database handles, set up by the app's lifespan."""
    return request.app.state.database


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit on success, roll back on error."""
    async for session in session_scope(database.sessionmaker):
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
