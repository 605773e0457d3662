"""The `ragledger` command."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn

import structlog
import typer
import uvicorn

from ragledger.core.embedded_postgres import release_embedded_postgres
from ragledger.core.logging import configure_logging
from ragledger.core.runtime import Database, open_database
from ragledger.core.settings import Settings, get_settings
from ragledger.core.worker_thread import busy_workers
from ragledger.events.envelope import EventMetadata

log = structlog.get_logger(__name__)

app = typer.Typer(no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
ledger_app = typer.Typer(help="The event ledger.", no_args_is_help=True)
projections_app = typer.Typer(help="Projections and reactors.", no_args_is_help=True)
audit_app = typer.Typer(help="Exports for auditors.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts (the way the first admin is made).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
app.add_typer(projections_app, name="projections")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")


# Set by the --verbose option of the command group (see `main`).
_verbose = False


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at INFO (or LOG_LEVEL=DEBUG) to stderr.")
    ] = False,
) -> None:
    """ragledger: event-sourced, audit-first RAG platform."""
    global _verbose
    _verbose = verbose


def _settings(*, service: bool = False) -> Settings:
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


def _with_database[T](
    work: Callable[[Database], Awaitable[T]],
    *,
    migrate: bool | None = None,
    settings: Settings | None = None,
) -> T:
    settings = settings or _settings()

    async def main() -> T:
        database = await open_database(settings, migrate=migrate)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(main())


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _end_now_if_workers_busy(code: object) -> None:
    """End the process without interpreter finalization while a model job still runs.

    A warm-up abandoned at shutdown keeps loading on its daemon thread, which may hold
    an import lock (torch and transformers import lazily); a destructor that imports
    during finalization then waits for it forever (seen in CI with litellm's HTTP
    client). The server's shutdown has closed everything it owns by now; the embedded
    PostgreSQL is released here because atexit will not run.
    """
    busy = busy_workers()
    if not busy:
        return
    release_embedded_postgres()
    log.info("exit_without_finalization", busy_workers=busy)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (1 if code else 0))


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """Give the workers one empty PROMETHEUS_MULTIPROC_DIR (their metrics are summed)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(directory) if directory else settings.data_dir / "prometheus"
    path.mkdir(parents=True, exist_ok=True)
    # Files of a previous run would add its counts to this one's.
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST setting).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT setting).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    runner: Annotated[
        bool, typer.Option("--runner/--no-runner", help="Run subscribers in the API process.")
    ] = True,
) -> None:
    """Serve the HTTP API (and, unless --no-runner, the subscriber runner)."""
    settings = _settings(service=True)
    if workers > 1:
        if not settings.redis_url:
            # Each worker then counts (and windows security events) on its own: a limit
            # of N per minute lets N per worker through.
            log.warning(
                "rate_limits_per_process",
                workers=workers,
                detail=(
                    "REDIS_URL is not set: each worker keeps its own rate limits, so every "
                    "limit is multiplied by the number of workers; set REDIS_URL to share them"
                ),
            )
        _prepare_multiprocess_metrics(settings)
    # Migrate (or refuse) once here, before any worker starts.
    _with_database(lambda _db: asyncio.sleep(0), settings=settings)
    os.environ["RUN_SUBSCRIBERS"] = "true" if runner else "false"
    # uvicorn restores this handler and re-raises the SIGTERM it handled; exiting through
    # SystemExit (not the default kill) lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    get_settings.cache_clear()
    try:
        uvicorn.run(
            "ragledger.api.app:create_default_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_config=None,
            # The request middleware logs each request (route, status, duration, request
            # id); uvicorn's access line would repeat it at a cost of ~1% of the CPU.
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=30,
            timeout_worker_healthcheck=settings.worker_healthcheck_timeout_s,
        )
    except SystemExit as exc:
        _end_now_if_workers_busy(exc.code)
        raise
    _end_now_if_workers_busy(0)


@app.command("runner")
def run_runner(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port (default: none)."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Bind address of the metrics port (keep it private).")
    ] = "127.0.0.1",
) -> None:
    """Run only the subscriber runner and the daily digest (beside `serve --no-runner`).

    Start two or more: each subscriber has one active consumer at a time (a PostgreSQL
    advisory lock); the others stand by and take over when it stops or dies. SIGTERM
    lets each consumer commit or roll back its batch, then exits.
    """
    from prometheus_client import start_http_server

    from ragledger.core.metrics import monitor_event_loop_lag
    from ragledger.projections.registry import all_subscribers
    from ragledger.projections.runner import SubscriberRunner, runner_config
    from ragledger.projections.subscriber_alerts import watch_subscribers
    from ragledger.services.interrupted_answers import sweep_interrupted_answers
    from ragledger.services.ledger_audit import scheduled_digests
    from ragledger.services.signing import DigestSigner
    from ragledger.services.tree_heads import scheduled_tree_heads

    settings = _settings(service=True)
    if metrics_port is not None:
        start_http_server(metrics_port, addr=metrics_host)

    async def work(database: Database) -> None:
        runner = SubscriberRunner(
            database.engine, all_subscribers(settings), runner_config(settings)
        )
        signer = DigestSigner.from_settings(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        background = [
            asyncio.create_task(scheduled_digests(database.sessionmaker, signer, settings)),
            asyncio.create_task(sweep_interrupted_answers(database.sessionmaker, settings)),
            asyncio.create_task(watch_subscribers(database.sessionmaker, settings)),
            asyncio.create_task(scheduled_tree_heads(database.sessionmaker, signer, settings)),
            asyncio.create_task(monitor_event_loop_lag()),
        ]
        try:
            await runner.run()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            log.info("runner_stopped")

    _with_database(work, settings=settings)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    _with_database(lambda _db: asyncio.sleep(0), migrate=True)
    typer.echo("database is at the latest schema")


@ledger_app.command("verify")
def ledger_verify(
    incremental: Annotated[
        bool, typer.Option(help="Start from the last trusted signed digest, not genesis.")
    ] = False,
) -> None:
    """Recompute the hash chain; exit 1 naming the first broken position. Recorded."""
    from ragledger.services.ledger_audit import run_verification
    from ragledger.services.signing import DigestSigner

    settings = _settings()

    async def work(database: Database):  # noqa: ANN202
        signer = DigestSigner.from_settings(settings)
        return await run_verification(
            database.sessionmaker, signer, full=not incremental, metadata=_cli_metadata()
        )

    run = _with_database(work)
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


@projections_app.command("status")
def projections_status() -> None:
    """Show each subscriber's checkpoint, lag and last error."""
    from ragledger.projections.registry import all_subscribers
    from ragledger.services.subscriber_status import subscriber_statuses

    async def work(database: Database):  # noqa: ANN202
        async with database.sessionmaker() as session:
            return await subscriber_statuses(session, all_subscribers(get_settings()))

    for status in _with_database(work):
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

    if _with_database(work):
        typer.echo(f"{name} rebuilt from the ledger")
    else:
        typer.echo(f"{name} reset; the active runner is replaying it from position 0")


def _cli_metadata() -> EventMetadata:
    return EventMetadata(
        actor_id=f"cli:{getpass.getuser()}", actor_role="operator", user_agent="ragledger-cli"
    )


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code=code)


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
    settings = _settings()

    async def work(database: Database) -> users_service.UserView:
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
                metadata=_cli_metadata(),
            )

    try:
        view = _with_database(work)
    except DomainError as exc:
        _fail(f"error: {exc.detail}")
    typer.echo(f"created {view.email} ({view.role}) id={view.id} groups={','.join(view.groups)}")


@users_app.command("list")
def users_list() -> None:
    """List every account."""
    from sqlalchemy import select

    from ragledger.models.users import User

    async def work(database: Database) -> list[User]:
        async with database.sessionmaker() as session:
            return list((await session.scalars(select(User).order_by(User.created_at))).all())

    for user in _with_database(work):
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

    async def work(database: Database) -> users_service.UserView | None:
        async with database.sessionmaker() as session, session.begin():
            user = await users_service.get_by_email(session, email)
            if user is None:
                return None
            return await users_service.update_user(
                session, user_id=user.id, role=role, actor_id=None, metadata=_cli_metadata()
            )

    try:
        view = _with_database(work)
    except DomainError as exc:
        _fail(f"error: {exc.detail}")
    if view is None:
        _fail(f"error: no user with email {email}")
    typer.echo(f"{view.email} is now {view.role}")


@app.command()
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
    from ragledger.cli_ingest import collect_files, ingest_files

    settings = _settings()
    files = collect_files(paths)
    if not files:
        _fail("no files found")

    async def work(database: Database) -> int:
        return await ingest_files(
            database,
            settings,
            files,
            groups=group or [],
            wait=wait,
            public=public,
            metadata=_cli_metadata(),
        )

    raise typer.Exit(code=_with_database(work))


@app.command()
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
    from ragledger.core.ids import uuid7
    from ragledger.services import users as users_service
    from ragledger.services.answering import (
        QuestionRequest,
        StreamEvent,
        answer_question,
        validate_question,
    )
    from ragledger.services.documents import Reader
    from ragledger.services.embedding import get_embedder
    from ragledger.services.errors import DomainError
    from ragledger.services.grounded_answers import resolve_mode

    settings = _settings()
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
                _fail(f"error: no active user with email {as_email}")
            reader = Reader(user.id, user.role, tuple(user.groups or ()))
            text, k, ids = await validate_question(
                session,
                question=question,
                top_k=top_k,
                document_ids=None,
                reader=reader,
                settings=settings,
            )
        request = QuestionRequest(
            question_id=uuid7(),
            question=text,
            top_k=k,
            document_ids=ids,
            reader=reader,
            asker_id=user.id,
            metadata=EventMetadata(
                actor_id=str(user.id), actor_role=user.role, user_agent="ragledger-cli"
            ),
            mode=resolve_mode(mode, settings),
        )
        await answer_question(
            request,
            sessionmaker=database.sessionmaker,
            embedder=get_embedder(settings),
            settings=settings,
            emit=emit,
        )

    try:
        _with_database(work)
    except DomainError as exc:
        _fail(f"error: {exc.detail}")
    sys.stdout.write("\n\n")
    for c in citations:
        path = " > ".join(c["heading_path"])  # type: ignore[arg-type]
        typer.echo(f"[{c['n']}] {c['title']} (version {c['version']}) {path}".rstrip())
    if outcome.get("name") == "error":
        _fail(f"error: {outcome.get('detail')}")
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


@app.command("eval")
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Evaluation set (JSON Lines).")],
    as_email: Annotated[
        str | None, typer.Option("--as", help="Ask as this account (default: an evaluator).")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, max=20, help="Context chunks (k).")] = 5,
    mode: Annotated[str, typer.Option(help="extractive or generative answers.")] = "extractive",
    answers: Annotated[bool, typer.Option(help="Run the answer path too.")] = True,
    corpus: Annotated[bool, typer.Option(help="Ingest the corpus files that are missing.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
) -> None:
    """Measure retrieval and answers on an evaluation set; recorded as EvaluationCompleted."""
    from rich.console import Console

    from ragledger.cli_evaluation import evaluate as run_eval
    from ragledger.cli_evaluation import render, write_json
    from ragledger.services.evaluation.dataset import DatasetError, load_dataset
    from ragledger.services.evaluation.run import MODES, EvalOptions

    if mode not in MODES:
        _fail(f"error: --mode must be one of {', '.join(MODES)}", code=2)
    settings = _settings()
    try:
        loaded = load_dataset(dataset)
    except DatasetError as exc:
        _fail(f"error: {exc}", code=2)
    options = EvalOptions(top_k=top_k, mode=mode, answers=answers)

    async def work(database: Database):  # noqa: ANN202
        return await run_eval(
            database,
            settings,
            loaded,
            as_email=as_email,
            options=options,
            ingest=corpus,
            metadata=_cli_metadata(),
        )

    try:
        report = _with_database(work)
    except (DatasetError, LookupError) as exc:
        _fail(f"error: {exc}")
    render(report, Console())
    if out is not None:
        write_json(report, out)
        typer.echo(f"report written to {out}")


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="File to write the JSON Lines to.")],
    from_position: Annotated[int | None, typer.Option("--from", min=1)] = None,
    to_position: Annotated[int | None, typer.Option("--to", min=1)] = None,
) -> None:
    """Export the ledger as JSON Lines ending with a signed digest (as GET /audit/export)."""
    from ragledger.services.errors import DomainError
    from ragledger.services.ledger_audit import export_lines, export_range
    from ragledger.services.signing import DigestSigner

    settings = _settings()

    async def work(database: Database) -> int:
        signer = DigestSigner.from_settings(settings)
        async with database.sessionmaker() as session:
            first, last = await export_range(session, from_position, to_position)
        count = 0
        with out.open("w", encoding="utf-8") as handle:
            async for line in export_lines(
                database.sessionmaker, signer, first=first, last=last, metadata=_cli_metadata()
            ):
                handle.write(line)
                count += 1
        typer.echo(
            f"exported positions {first}..{last} to {out}; public key {signer.public_key_b64()}"
        )
        return count

    try:
        _with_database(work)
    except DomainError as exc:
        _fail(f"error: {exc.detail}")


def _register_audit_commands() -> None:
    # Their own module: this one is at its size limit.
    from ragledger.cli_audit import audit_receipt, audit_witness

    audit_app.command("receipt")(audit_receipt)
    audit_app.command("witness")(audit_witness)


_register_audit_commands()
