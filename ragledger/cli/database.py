"""`ragledger db`: the database schema."""

from __future__ import annotations

import asyncio

import typer

from ragledger.cli._common import with_database

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    with_database(lambda _db: asyncio.sleep(0), migrate=True)
    typer.echo("database is at the latest schema")
