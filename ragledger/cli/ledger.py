"""`ragledger ledger`: verifying the hash chain."""

from __future__ import annotations

from typing import Annotated

import typer

from ragledger.cli._common import cli_metadata, command_settings, with_database
from ragledger.core.runtime import Database

ledger_app = typer.Typer(help="The event ledger.", no_args_is_help=True)


@ledger_app.command("verify")
def ledger_verify(
    incremental: Annotated[
        bool, typer.Option(help="Start from the last trusted signed digest, not genesis.")
    ] = False,
) -> None:
    """Recompute the hash chain; exit 1 naming the first broken position. Recorded."""
    from ragledger.services.ledger_audit import run_verification
    from ragledger.services.signing import DigestSigner

    settings = command_settings()

    async def work(database: Database):  # noqa: ANN202
        signer = DigestSigner.from_settings(settings)
        return await run_verification(
            database.sessionmaker, signer, full=not incremental, metadata=cli_metadata()
        )

    run = with_database(work)
    result = run.result
    if run.valid:
        typer.echo(
            f"ledger intact: {result.checked} events, head {result.head_position} "
            f"{result.head_hash.hex()} (from position {run.from_position}; "
            f"{run.digests.compared} signed digest(s) match)"
        )
        return
    if result.first_invalid_position is not None:
        typer.echo(
            f"ledger BROKEN at position {result.first_invalid_position}: {result.reason} "
            f"({result.checked} events verified before it)",
            err=True,
        )
    if run.digest_position is not None:
        typer.echo(f"ledger REWRITTEN: {run.reason}", err=True)
    raise typer.Exit(code=1)
