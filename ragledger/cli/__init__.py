"""The `ragledger` command: one module per command or command group.

`app` is the console script's entry point (`ragledger = "ragledger.cli:app"`). The
command modules import the services, projections and models inside each command, so
that `ragledger --help` and a command that needs little start fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ragledger.cli import (
    ask,
    audit,
    database,
    evaluation,
    ingest,
    ledger,
    projections,
    runner,
    serve,
    users,
)
from ragledger.cli._common import set_verbose

app = typer.Typer(no_args_is_help=True)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at INFO (or LOG_LEVEL=DEBUG) to stderr.")
    ] = False,
) -> None:
    """ragledger: event-sourced, audit-first RAG platform."""
    set_verbose(verbose)


app.command("serve")(serve.serve)
app.command("runner")(runner.run_runner)
app.add_typer(database.db_app, name="db")
app.add_typer(ledger.ledger_app, name="ledger")
app.add_typer(projections.projections_app, name="projections")
app.add_typer(users.users_app, name="users")
app.command("ingest")(ingest.ingest)
app.command("ask")(ask.ask)
app.command("eval")(evaluation.evaluate)
app.add_typer(audit.audit_app, name="audit")

__all__ = ["app"]
