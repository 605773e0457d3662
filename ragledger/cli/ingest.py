"""`ragledger ingest`: upload files from disk and wait for them to be indexed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragledger.cli._common import cli_metadata, command_settings, fail, with_database
from ragledger.core.runtime import Database


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    group: Annotated[
        list[str] | None,
        typer.Option(help="Access group; repeat. None and not --public: admins and auditors."),
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="Every signed-in user may read the files.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait until every file is indexed or failed.")] = True,
) -> None:
    """Upload files through the same service as the API and wait for them to be indexed."""
    from ragledger.cli.ingest_progress import collect_files, ingest_files

    settings = command_settings()
    files = collect_files(paths)
    if not files:
        fail("no files found")

    async def work(database: Database) -> int:
        return await ingest_files(
            database,
            settings,
            files,
            groups=group or [],
            wait=wait,
            public=public,
            metadata=cli_metadata(),
        )

    raise typer.Exit(code=with_database(work))
