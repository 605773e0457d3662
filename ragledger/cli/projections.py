"""`ragledger projections`: the subscribers' checkpoints, and rebuilding a projection."""

from __future__ import annotations

from typing import Annotated

import typer

from ragledger.cli._common import with_database
from ragledger.core.runtime import Database
from ragledger.core.settings import get_settings

projections_app = typer.Typer(help="Projections and reactors.", no_args_is_help=True)


@projections_app.command("status")
def projections_status() -> None:
    """Show each subscriber's checkpoint, lag and last error."""
    from ragledger.projections.registry import all_subscribers
    from ragledger.services.subscriber_status import subscriber_statuses

    async def work(database: Database):  # noqa: ANN202
        async with database.sessionmaker() as session:
            return await subscriber_statuses(session, all_subscribers(get_settings()))

    for status in with_database(work):
        line = f"{status.name:<20} {status.kind:<10} position={status.position} lag={status.lag}"
        if status.last_error:
            line += f" FAILING at {status.failing_position}: {status.last_error}"
        typer.echo(line)


@projections_app.command("rebuild")
def projections_rebuild(name: Annotated[str, typer.Argument(help="Projection name.")]) -> None:
    """Empty a projection and replay the ledger into it from position 0."""
    from ragledger.projections.registry import all_subscribers
    from ragledger.projections.runner import reset_projection, run_until_caught_up
    from ragledger.projections.subscriber import Projection

    subscribers = {s.name: s for s in all_subscribers(get_settings())}
    subscriber = subscribers.get(name)
    if subscriber is None:
        typer.echo(
            f"unknown subscriber {name!r}; known: {', '.join(sorted(subscribers))}", err=True
        )
        raise typer.Exit(code=2)
    if not isinstance(subscriber, Projection):
        typer.echo(
            f"{name} is a reactor: reactors cause side effects and are never rerun", err=True
        )
        raise typer.Exit(code=2)

    async def work(database: Database) -> bool:
        await reset_projection(database.engine, subscriber)
        return await run_until_caught_up(database.engine, subscriber)

    if with_database(work):
        typer.echo(f"{name} rebuilt from the ledger")
    else:
        typer.echo(f"{name} reset; the active runner is replaying it from position 0")
