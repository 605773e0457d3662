"""`ragledger ask`: ask as a user; the answer streams to the terminal, then its citations."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ragledger.cli._common import command_settings, fail, with_database
from ragledger.core.runtime import Database
from ragledger.events.envelope import EventMetadata


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    as_email: Annotated[str, typer.Option("--as", help="Ask as this account (its access).")],
    top_k: Annotated[int | None, typer.Option(help="Context chunks (default: setting).")] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="extractive or generative (default: ANSWER_MODE, or by LLM_MODEL)."),
    ] = None,
) -> None:
    """Ask a question as a user; the answer streams to the terminal, then its citations."""
    from ragledger.services import users as users_service
    from ragledger.services.answering import (
        StreamEvent,
        answer_question,
        question_request,
    )
    from ragledger.services.documents import reader_of
    from ragledger.services.embedding import get_embedder
    from ragledger.services.errors import DomainError

    settings = command_settings()
    citations: list[dict[str, object]] = []
    outcome: dict[str, object] = {}

    async def emit(event: StreamEvent) -> None:
        if event.name == "token":
            sys.stdout.write(str(event.data["text"]))
            sys.stdout.flush()
        elif event.name == "context":
            citations.extend(event.data["citations"])
        elif event.name in ("done", "error"):
            outcome.update(name=event.name, **event.data)

    async def work(database: Database) -> None:
        async with database.sessionmaker() as session:
            user = await users_service.get_by_email(session, as_email)
            if user is None or not user.is_active:
                fail(f"error: no active user with email {as_email}")
            request = await question_request(
                session,
                question=question,
                top_k=top_k,
                document_ids=None,
                mode=mode,
                reader=reader_of(user),
                asker_id=user.id,
                metadata=EventMetadata(
                    actor_id=str(user.id), actor_role=user.role, user_agent="ragledger-cli"
                ),
                settings=settings,
            )
        await answer_question(
            request,
            sessionmaker=database.sessionmaker,
            embedder=get_embedder(settings),
            settings=settings,
            emit=emit,
        )

    try:
        with_database(work)
    except DomainError as exc:
        fail(f"error: {exc.detail}")
    sys.stdout.write("\n\n")
    for c in citations:
        path = " > ".join(c["heading_path"])  # type: ignore[arg-type]
        typer.echo(f"[{c['n']}] {c['title']} (version {c['version']}) {path}".rstrip())
    if outcome.get("name") == "error":
        fail(f"error: {outcome.get('detail')}")
    if outcome.get("answer"):
        # A generated answer that its sources do not support is replaced, after the fact.
        typer.echo(f"Not supported by the documents; the answer is: {outcome['answer']}")
    support = outcome.get("support")
    if isinstance(support, dict) and outcome.get("mode") == "generative":
        typer.echo(
            f"groundedness {support['groundedness']:.2f}: "
            f"{support['supported_sentences']} sentence(s) supported, "
            f"{support['unsupported_sentences']} not"
        )
    if outcome.get("declined"):
        typer.echo(f"declined: {outcome['declined']}")
    typer.echo(f"answer id: {outcome.get('answer_id')}")
