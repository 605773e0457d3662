"""`ragledger users`: accounts (the way the first admin is made)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ragledger.cli._common import cli_metadata, command_settings, fail, with_database
from ragledger.core.runtime import Database

if TYPE_CHECKING:
    from ragledger.models.users import User
    from ragledger.services.users import UserView

users_app = typer.Typer(help="Accounts (the way the first admin is made).", no_args_is_help=True)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The account's email address.")],
    role: Annotated[str, typer.Option(help="employee, auditor or admin.")] = "employee",
    group: Annotated[list[str] | None, typer.Option(help="A group; repeat for several.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create an account (prompts for the password unless --password-stdin)."""
    from ragledger.services import users as users_service
    from ragledger.services.errors import DomainError

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = command_settings()

    async def work(database: Database) -> UserView:
        async with database.sessionmaker() as session, session.begin():
            return await users_service.create_user(
                session,
                email=email,
                password=password,
                role=role,
                groups=group or [],
                password_min_length=settings.password_min_length,
                actor_id=None,
                via="cli",
                metadata=cli_metadata(),
            )

    try:
        view = with_database(work)
    except DomainError as exc:
        fail(f"error: {exc.detail}")
    typer.echo(f"created {view.email} ({view.role}) id={view.id} groups={','.join(view.groups)}")


@users_app.command("list")
def users_list() -> None:
    """List every account."""
    from sqlalchemy import select

    from ragledger.models.users import User

    async def work(database: Database) -> list[User]:
        async with database.sessionmaker() as session:
            return list((await session.scalars(select(User).order_by(User.created_at))).all())

    for user in with_database(work):
        state = "active" if user.is_active else "deactivated"
        groups = ",".join(user.groups or []) or "-"
        typer.echo(f"{user.email:<40} {user.role:<9} {state:<12} {groups}")


@users_app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Argument(help="The account's email address.")],
    role: Annotated[str, typer.Argument(help="employee, auditor or admin.")],
) -> None:
    """Change an account's role."""
    from ragledger.services import users as users_service
    from ragledger.services.errors import DomainError

    async def work(database: Database) -> UserView | None:
        async with database.sessionmaker() as session, session.begin():
            user = await users_service.get_by_email(session, email)
            if user is None:
                return None
            return await users_service.update_user(
                session, user_id=user.id, role=role, actor_id=None, metadata=cli_metadata()
            )

    try:
        view = with_database(work)
    except DomainError as exc:
        fail(f"error: {exc.detail}")
    if view is None:
        fail(f"error: no user with email {email}")
    typer.echo(f"{view.email} is now {view.role}")
