"""What every command shares: settings and logging, the database, the actor, failing."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import NoReturn

import typer

from ragledger.core.logging import configure_logging
from ragledger.core.runtime import Database, open_database
from ragledger.core.settings import Settings, get_settings
from ragledger.events.envelope import EventMetadata

# Set by the --verbose option of the command group (see `ragledger.cli.main`).
_verbose = False


def set_verbose(verbose: bool) -> None:
    """Remember the group's --verbose for the commands' logging (see `command_settings`)."""
    global _verbose
    _verbose = verbose


def command_settings(*, service: bool = False) -> Settings:
    """Settings, with logging set up for a service (`serve`, `runner`) or a command.

    Services log as LOG_FORMAT and LOG_LEVEL say. Other commands print their own human
    output on stdout; their logs go to stderr in the readable format, warnings and
    errors only unless --verbose, so that nothing (the embedded PostgreSQL's exit line,
    a JSON record) is mixed into what the command prints.
    """
    settings = get_settings()
    if service:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
    else:
        level = "WARNING"
        if _verbose:
            level = "DEBUG" if settings.log_level.upper() == "DEBUG" else "INFO"
        configure_logging(level=level, fmt="console")
    return settings


def with_database[T](
    work: Callable[[Database], Awaitable[T]],
    *,
    migrate: bool | None = None,
    settings: Settings | None = None,
) -> T:
    """Open the database, run `work` on it in a fresh event loop, close it; its result."""
    settings = settings or command_settings()

    async def main() -> T:
        database = await open_database(settings, migrate=migrate)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(main())


def cli_metadata() -> EventMetadata:
    """The metadata of an event an operator's command records (the OS user is the actor)."""
    return EventMetadata(
        actor_id=f"cli:{getpass.getuser()}", actor_role="operator", user_agent="ragledger-cli"
    )


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    typer.echo(message, err=True)
    raise typer.Exit(code=code)
