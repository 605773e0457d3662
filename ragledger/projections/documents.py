"""The `documents` projection: the catalog and every version's status."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.documents import (
    DocumentAccessChanged,
    DocumentChunked,
    DocumentIndexed,
    DocumentIngestionFailed,
    DocumentRetracted,
    DocumentTextExtracted,
    DocumentUploaded,
)
from ragledger.events.envelope import RecordedEvent
from ragledger.events.registry import registry
from ragledger.models.documents import DocumentRow, DocumentVersionRow
from ragledger.projections.subscriber import Projection


class DocumentsProjection(Projection):
    """Maintains `documents` (current state) and `document_versions` (every upload)."""

    name = "documents"
    event_types = frozenset(
        {
            "DocumentUploaded",
            "DocumentTextExtracted",
            "DocumentChunked",
            "DocumentIndexed",
            "DocumentIngestionFailed",
            "DocumentRetracted",
            "DocumentAccessChanged",
        }
    )

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Apply one document event."""
        at = recorded.recorded_at
        match registry.decode(recorded):
            case DocumentUploaded() as e:
                session.add(
                    DocumentVersionRow(
                        document_id=e.document_id,
                        version=e.version,
                        title=e.title,
                        filename=e.filename,
                        original_filename=e.original_filename,
                        blob_sha256=e.blob_sha256,
                        size=e.size,
                        content_type=e.content_type,
                        status="pending",
                        chunk_count=0,
                        uploaded_by=e.uploaded_by,
                        uploaded_at=at,
                        uploaded_position=recorded.position,
                    )
                )
                document = await session.get(DocumentRow, e.document_id)
                if document is None:
                    session.add(
                        DocumentRow(
                            document_id=e.document_id,
                            title=e.title,
                            filename=e.filename,
                            content_type=e.content_type,
                            current_version=e.version,
                            indexed_version=None,
                            status="pending",
                            access_groups=list(e.access_groups),
                            public=e.public,
                            chunk_count=0,
                            retracted=False,
                            uploaded_by=e.uploaded_by,
                            created_at=at,
                            updated_at=at,
                            last_position=recorded.position,
                        )
                    )
                else:
                    document.title = e.title
                    document.filename = e.filename
                    document.content_type = e.content_type
                    document.current_version = e.version
                    document.access_groups = list(e.access_groups)
                    document.public = e.public
                    if not document.retracted:
                        document.status = "pending"
                        document.failure_reason = None
                    document.updated_at = at
                    document.last_position = recorded.position
                await session.flush()
            case DocumentTextExtracted() as e:
                await self._version(
                    session,
                    e.document_id,
                    e.version,
                    char_count=e.char_count,
                    page_count=e.page_count,
                )
            case DocumentChunked() as e:
                await self._version(session, e.document_id, e.version, chunk_count=len(e.chunks))
            case DocumentIndexed() as e:
                await self._version(
                    session,
                    e.document_id,
                    e.version,
                    status="indexed",
                    indexed_at=at,
                    indexed_position=recorded.position,
                )
                await self._document_outcome(
                    session,
                    e.document_id,
                    e.version,
                    recorded,
                    status="indexed",
                    chunk_count=e.chunk_count,
                )
            case DocumentIngestionFailed() as e:
                await self._version(
                    session, e.document_id, e.version, status="failed", failure_reason=e.reason
                )
                await self._document_outcome(
                    session,
                    e.document_id,
                    e.version,
                    recorded,
                    status="failed",
                    failure_reason=e.reason,
                )
            case DocumentRetracted() as e:
                await session.execute(
                    update(DocumentRow)
                    .where(DocumentRow.document_id == e.document_id)
                    .values(
                        retracted=True,
                        status="retracted",
                        updated_at=at,
                        last_position=recorded.position,
                    )
                )
            case DocumentAccessChanged() as e:
                await session.execute(
                    update(DocumentRow)
                    .where(DocumentRow.document_id == e.document_id)
                    .values(
                        access_groups=list(e.new_groups),
                        public=e.new_public,
                        updated_at=at,
                        last_position=recorded.position,
                    )
                )
            case _:
                pass

    async def _version(
        self, session: AsyncSession, document_id: object, version: int, **values: object
    ) -> None:
        await session.execute(
            update(DocumentVersionRow)
            .where(
                DocumentVersionRow.document_id == document_id, DocumentVersionRow.version == version
            )
            .values(**values)
        )

    async def _document_outcome(
        self,
        session: AsyncSession,
        document_id: object,
        version: int,
        recorded: RecordedEvent,
        **values: object,
    ) -> None:
        # Only the current version decides the document's status; an older version's
        # late outcome is visible in its own row.
        document = await session.scalar(
            select(DocumentRow).where(DocumentRow.document_id == document_id)
        )
        if document is None or document.current_version != version:
            return
        if values.get("status") == "indexed":
            document.indexed_version = version
            document.indexed_position = recorded.position
            document.chunk_count = int(values["chunk_count"])  # type: ignore[call-overload]
            document.failure_reason = None
        else:
            document.failure_reason = str(values.get("failure_reason"))
        if not document.retracted:
            document.status = str(values["status"])
        document.updated_at = recorded.recorded_at
        document.last_position = recorded.position
        await session.flush()

    async def reset(self, session: AsyncSession) -> None:
        """Empty the catalog."""
        await session.execute(delete(DocumentVersionRow))
        await session.execute(delete(DocumentRow))
