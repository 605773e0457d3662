"""The `ingestion` reactor: DocumentUploaded -> extract, chunk, embed -> document events.

The slow work (parsing, tokenising, the model) runs off the event loop and before the
append, so the ledger's append lock is held only for the final short append. The
results of one upload are appended together, in the same transaction as the
reactor's checkpoint: a crash re-does the work, never records it twice.

Extraction and chunking failures are the document's fault and end as
DocumentIngestionFailed with a reason a person can act on. Embedding failures (a remote
model down) are the platform's: the reactor raises, and the runner retries with backoff,
INGESTION_MAX_ATTEMPTS times in a row at most; then the upload is recorded as failed
(stage `ingest`) and the uploads behind it go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import ClassVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.core.ids import uuid7
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.blobs import get_blob
from ragledger.events.codec import encode_vector
from ragledger.events.documents import (
    ChunkRecord,
    ChunksEmbedded,
    DocumentChunked,
    DocumentIndexed,
    DocumentIngestionFailed,
    DocumentTextExtracted,
    DocumentUploaded,
    document_stream,
)
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.events.registry import registry
from ragledger.projections.subscriber import Reactor
from ragledger.services.chunking import Chunk, chunk_document
from ragledger.services.embedding import Embedder, get_embedder
from ragledger.services.extraction import ExtractionError
from ragledger.services.extraction.worker import ExtractionWorker

log = structlog.get_logger(__name__)

# Vectors per ChunksEmbedded event: 256 x 384 floats is ~130 KB of base64, a size
# PostgreSQL and the projection handle comfortably in one row.
VECTORS_PER_EVENT = 256


# The context line is capped so that it and a full chunk (CHUNK_MAX_TOKENS, 200 by
# default) stay within the model's 256-token window: 160 characters are at most ~45
# word pieces for English text. Without the cap a long title pushed the end of the
# chunk past the window, where the model silently truncates.
MAX_CONTEXT_CHARS = 160


def embedding_input(title: str, heading_path: tuple[str, ...], text: str) -> str:
    """What the model embeds for a chunk: its title and headings give the text context."""
    context = " > ".join((title, *heading_path))
    if len(context) > MAX_CONTEXT_CHARS:
        context = context[: MAX_CONTEXT_CHARS - 1].rstrip() + "…"
    return f"{context}\n{text}"


class IngestionReactor(Reactor):
    """Turns each uploaded version into extracted, chunked, embedded, indexed events."""

    name = "ingestion"
    event_types = frozenset({"DocumentUploaded"})
    batch_size: ClassVar[int | None] = 1

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self._settings = settings
        self._embedder = embedder
        # One child process extracts this reactor's documents in turn (started on first
        # use); the runner closes it when it stops.
        self.extraction = ExtractionWorker(
            memory_bytes=settings.extraction_memory_bytes,
            max_documents=settings.extraction_worker_documents,
        )

    @property
    def embedder(self) -> Embedder:
        """The process's embedder, loaded on first use."""
        if self._embedder is None:
            self._embedder = get_embedder(self._settings)
        return self._embedder

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Ingest one uploaded version."""
        uploaded = registry.decode(recorded)
        assert isinstance(uploaded, DocumentUploaded)
        metadata = EventMetadata(
            actor_id="system:ingestion",
            actor_role="system",
            correlation_id=recorded.metadata.get("correlation_id"),
            causation_id=str(recorded.event_id),
        )
        stream = document_stream(uploaded.document_id)
        started = time.perf_counter()
        content = await get_blob(session, uploaded.blob_sha256)
        if content is None:
            await self._fail(
                session, stream, uploaded, "load", "the uploaded bytes are missing", metadata
            )
            return
        settings = self._settings
        try:
            # In a child process with a time and a memory limit: a hostile file
            # fails on its own instead of stalling every upload behind it.
            extracted = await self.extraction.extract(
                content,
                uploaded.content_type,
                max_decompressed_bytes=settings.max_decompressed_bytes,
                max_chars=settings.max_extracted_chars,
                timeout_s=settings.extraction_timeout_s,
            )
        except ExtractionError as exc:
            await self._fail(session, stream, uploaded, "extract", str(exc), metadata)
            return
        extracted_ms = (time.perf_counter() - started) * 1000
        embedder = self.embedder
        chunks: list[Chunk] = await asyncio.to_thread(
            chunk_document,
            extracted,
            count_tokens=embedder.count_tokens,
            max_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        if not chunks:
            await self._fail(
                session, stream, uploaded, "chunk", "the document contains no text", metadata
            )
            return
        chunked_ms = (time.perf_counter() - started) * 1000 - extracted_ms
        vectors = await embedder.embed(
            [embedding_input(uploaded.title, c.heading_path, c.text) for c in chunks]
        )
        embedded_ms = (time.perf_counter() - started) * 1000 - extracted_ms - chunked_ms

        records = tuple(
            ChunkRecord(
                chunk_id=uuid7(),
                index=c.index,
                text=c.text,
                text_sha256=hashlib.sha256(c.text.encode("utf-8")).hexdigest(),
                start=c.start,
                end=c.end,
                heading_path=c.heading_path,
                token_count=c.token_count,
            )
            for c in chunks
        )
        info = embedder.info
        events: list[object] = [
            DocumentTextExtracted(
                document_id=uploaded.document_id,
                version=uploaded.version,
                content_type=extracted.content_type,
                char_count=len(extracted.text),
                text_sha256=hashlib.sha256(extracted.text.encode("utf-8")).hexdigest(),
                section_count=len(extracted.sections),
                page_count=extracted.page_count,
            ),
            DocumentChunked(
                document_id=uploaded.document_id,
                version=uploaded.version,
                max_tokens=settings.chunk_max_tokens,
                overlap_tokens=settings.chunk_overlap_tokens,
                chunks=records,
            ),
        ]
        for start in range(0, len(records), VECTORS_PER_EVENT):
            part = records[start : start + VECTORS_PER_EVENT]
            events.append(
                ChunksEmbedded(
                    document_id=uploaded.document_id,
                    version=uploaded.version,
                    model=info.name,
                    model_sha256=info.files_sha256,
                    dimensions=info.dimensions,
                    chunk_ids=tuple(r.chunk_id for r in part),
                    vectors=tuple(encode_vector(vectors[start + i]) for i in range(len(part))),
                )
            )
        events.append(
            DocumentIndexed(
                document_id=uploaded.document_id,
                version=uploaded.version,
                chunk_count=len(records),
            )
        )
        await store.append(session, stream, events, metadata=metadata)
        log.info(
            "document_ingested",
            document_id=str(uploaded.document_id),
            version=uploaded.version,
            chunks=len(records),
            chars=len(extracted.text),
            extract_ms=round(extracted_ms, 1),
            chunk_ms=round(chunked_ms, 1),
            embed_ms=round(embedded_ms, 1),
        )

    def max_attempts(self) -> int | None:
        """INGESTION_MAX_ATTEMPTS: then the upload is recorded as failed and the next goes on."""
        return self._settings.ingestion_max_attempts

    async def give_up(
        self, session: AsyncSession, recorded: RecordedEvent, cause: BaseException, attempts: int
    ) -> None:
        """Record DocumentIngestionFailed (stage `ingest`) for an upload that kept failing."""
        uploaded = registry.decode(recorded)
        assert isinstance(uploaded, DocumentUploaded)
        metadata = EventMetadata(
            actor_id="system:ingestion",
            actor_role="system",
            correlation_id=recorded.metadata.get("correlation_id"),
            causation_id=str(recorded.event_id),
        )
        reason = f"ingestion failed {attempts} times in a row; last error: {cause!r}"
        await self._fail(
            session, document_stream(uploaded.document_id), uploaded, "ingest", reason, metadata
        )

    async def aclose(self) -> None:
        """Stop the extraction child; the next upload starts a new one."""
        await self.extraction.aclose()

    async def _fail(
        self,
        session: AsyncSession,
        stream: str,
        uploaded: DocumentUploaded,
        stage: str,
        reason: str,
        metadata: EventMetadata,
    ) -> None:
        log.info(
            "document_ingestion_failed",
            document_id=str(uploaded.document_id),
            version=uploaded.version,
            stage=stage,
            reason=reason,
        )
        await store.append(
            session,
            stream,
            [DocumentIngestionFailed(uploaded.document_id, uploaded.version, stage, reason[:1000])],
            metadata=metadata,
        )
