"""Ingest files from disk through the upload service, with a progress bar and a summary.

The work of `ragledger ingest` (see `ragledger.cli.ingest`), kept apart so that the
command line does not import the projections and services until a command needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select, tuple_

from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata
from ragledger.models.documents import DocumentVersionRow
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import RunnerConfig, SubscriberRunner
from ragledger.services import documents as documents_service
from ragledger.services.errors import DomainError


@dataclass(slots=True)
class FileOutcome:
    """What happened to one file."""

    path: Path
    document_id: uuid.UUID | None = None
    version: int | None = None
    status: str = "pending"
    detail: str = ""


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and every non-hidden file under the folders named, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            found.append(path)
    return found


def _display(path: Path) -> str:
    # Relative to the working directory when possible: short enough for a table.
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def ingest_files(
    database: Database,
    settings: Settings,
    files: Sequence[Path],
    *,
    groups: Sequence[str],
    wait: bool,
    public: bool = False,
    metadata: EventMetadata,
    console: Console | None = None,
) -> int:
    """Upload each file, then (with `wait`) drive the runner until all are done.

    Returns the exit code: 0 when every file was indexed (or accepted, without `wait`).
    """
    console = console or Console(stderr=True)
    outcomes = [FileOutcome(path) for path in files]
    with _progress(console) as progress:
        task = progress.add_task("uploading", total=len(outcomes))
        for outcome in outcomes:
            try:
                content = await asyncio.to_thread(outcome.path.read_bytes)
                async with database.sessionmaker() as session, session.begin():
                    accepted = await documents_service.upload(
                        session,
                        content=content,
                        filename=outcome.path.name,
                        title=None,
                        access_groups=groups,
                        public=public,
                        max_bytes=settings.max_upload_bytes,
                        actor_id=None,
                        metadata=metadata,
                    )
                outcome.document_id, outcome.version = accepted.document_id, accepted.version
            except (DomainError, OSError) as exc:
                outcome.status = "rejected"
                outcome.detail = getattr(exc, "detail", None) or str(exc)
            progress.advance(task)

        pending = [o for o in outcomes if o.status == "pending"]
        if wait and pending:
            runner = SubscriberRunner(database.engine, all_subscribers(settings), RunnerConfig())
            running = asyncio.create_task(runner.run())
            indexing = progress.add_task("indexing", total=len(pending))
            try:
                while pending:
                    await _refresh(database, pending)
                    done = [o for o in pending if o.status != "pending"]
                    progress.advance(indexing, len(done))
                    pending = [o for o in pending if o.status == "pending"]
                    if pending:
                        await asyncio.sleep(0.5)
            finally:
                runner.stop()
                with contextlib.suppress(Exception):
                    await running
    _summary(console, outcomes)
    accepted_states = {"indexed"} if wait else {"indexed", "pending"}
    return 0 if all(o.status in accepted_states for o in outcomes) else 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


async def _refresh(database: Database, outcomes: Sequence[FileOutcome]) -> None:
    keys = [(o.document_id, o.version) for o in outcomes]
    async with database.sessionmaker() as session:
        rows = (
            await session.scalars(
                select(DocumentVersionRow).where(
                    tuple_(DocumentVersionRow.document_id, DocumentVersionRow.version).in_(keys)
                )
            )
        ).all()
        # "indexed" only once the chunks are searchable (the chunks projection's turn).
        searchable = await documents_service.searchable_up_to(session)
    by_key = {(r.document_id, r.version): r for r in rows}
    for outcome in outcomes:
        if outcome.document_id is None or outcome.version is None:
            continue
        row = by_key.get((outcome.document_id, outcome.version))
        if row is None:
            continue
        status = documents_service.reported_status(row.status, row.indexed_position, searchable)
        if status != "pending":
            outcome.status = status
            outcome.detail = (
                f"{row.chunk_count} chunks" if row.status == "indexed" else row.failure_reason or ""
            )


def _summary(console: Console, outcomes: Sequence[FileOutcome]) -> None:
    table = Table("file", "status", "document", "detail")
    table.columns[0].overflow = "fold"
    for o in outcomes:
        table.add_row(
            _display(o.path),
            o.status,
            f"{o.document_id} v{o.version}" if o.document_id else "-",
            o.detail,
        )
    console.print(table)
