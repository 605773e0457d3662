"""Bring an evaluation corpus into the platform and find its documents."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence

from rich.console import Console
from sqlalchemy import func, select

from ragledger.cli.ingest_progress import ingest_files
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata
from ragledger.models.documents import ChunkRow, DocumentVersionRow
from ragledger.projections.chunks import ChunksProjection
from ragledger.projections.runner import run_until_caught_up
from ragledger.services.evaluation.dataset import Dataset, DatasetError, corpus_paths


async def corpus_documents(database: Database, dataset: Dataset) -> dict[str, uuid.UUID]:
    """Corpus file sha256 -> the indexed document version holding those bytes."""
    shas = [f.sha256 for f in dataset.corpus.files]
    async with database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(DocumentVersionRow.blob_sha256, DocumentVersionRow.document_id)
                .where(
                    DocumentVersionRow.blob_sha256.in_(shas),
                    DocumentVersionRow.status == "indexed",
                )
                .order_by(DocumentVersionRow.uploaded_position)
            )
        ).all()
    # The latest upload of the same bytes wins.
    return {row.blob_sha256: row.document_id for row in rows}


async def _searchable_gap(database: Database, document_ids: Sequence[uuid.UUID]) -> int:
    """Chunks of the documents' latest indexed versions that are not searchable yet."""
    async with database.sessionmaker() as session:
        versions = (
            await session.execute(
                select(
                    DocumentVersionRow.document_id,
                    DocumentVersionRow.version,
                    DocumentVersionRow.chunk_count,
                ).where(
                    DocumentVersionRow.document_id.in_(document_ids),
                    DocumentVersionRow.status == "indexed",
                )
            )
        ).all()
        searchable = await session.scalar(
            select(func.count()).where(
                ChunkRow.document_id.in_(document_ids), ChunkRow.searchable.is_(True)
            )
        )
    latest: dict[uuid.UUID, tuple[int, int]] = {}
    for document_id, version, chunk_count in versions:
        if document_id not in latest or version > latest[document_id][0]:
            latest[document_id] = (version, chunk_count)
    return sum(count for _, count in latest.values()) - int(searchable or 0)


async def ensure_corpus(
    database: Database,
    settings: Settings,
    dataset: Dataset,
    *,
    ingest: bool,
    metadata: EventMetadata,
    console: Console,
) -> list[uuid.UUID]:
    """The corpus's document ids, ingesting the missing files first when `ingest`.

    Returns once every chunk of those documents is searchable. Raises DatasetError when
    a file is missing from the platform and `ingest` is off, or failed to ingest.
    """
    paths = corpus_paths(dataset.corpus)
    found = await corpus_documents(database, dataset)
    missing = [
        path
        for path in paths
        if hashlib.sha256(path.read_bytes()).hexdigest() not in found  # checked above
    ]
    if missing and not ingest:
        raise DatasetError(
            f"{len(missing)} of {len(paths)} corpus files are not ingested; "
            "run again with --corpus to ingest them"
        )
    if missing:
        # Public to every reader, as the corpus is public documentation (a document
        # without groups that is not public is for admins and auditors only).
        await ingest_files(
            database,
            settings,
            missing,
            groups=[],
            public=True,
            wait=True,
            metadata=metadata,
            console=console,
        )
        found = await corpus_documents(database, dataset)
    absent = [f.path for f in dataset.corpus.files if f.sha256 not in found]
    if absent:
        raise DatasetError(f"corpus files not indexed: {', '.join(absent)}")
    document_ids = list(dict.fromkeys(found[f.sha256] for f in dataset.corpus.files))
    # "indexed" may be reported before the chunks projection has applied it.
    while await _searchable_gap(database, document_ids) > 0:
        if not await run_until_caught_up(database.engine, ChunksProjection()):
            await asyncio.sleep(0.5)
    return document_ids
