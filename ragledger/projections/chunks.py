"""The `chunks` projection: the searchable table (text, vector, tsvector, access groups).

Chunks become searchable only when their version's DocumentIndexed arrives, so a
failed or half-projected ingestion is never retrievable. Uploading a new version hides
the older versions at once (a replaced policy must not be answered from); retraction
hides the whole document. Vectors come from ChunksEmbedded: a rebuild embeds nothing.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.codec import decode_vector
from ragledger.events.documents import (
    ChunksEmbedded,
    DocumentAccessChanged,
    DocumentChunked,
    DocumentIndexed,
    DocumentIngestionFailed,
    DocumentRetracted,
    DocumentUploaded,
)
from ragledger.events.envelope import RecordedEvent
from ragledger.events.registry import registry
from ragledger.models.documents import ChunkRow, ChunkSourceRow
from ragledger.projections.subscriber import Projection
from ragledger.services.document_access import record_access

_SET_EMBEDDINGS = text(
    """
    UPDATE chunks AS c SET embedding = CAST(u.vector AS vector)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:vectors AS text[])) AS u(id, vector)
    WHERE c.chunk_id = u.id
    """
)


class ChunksProjection(Projection):
    """Maintains `chunks` and its helper table `chunk_sources`."""

    name = "chunks"
    event_types = frozenset(
        {
            "DocumentUploaded",
            "DocumentChunked",
            "ChunksEmbedded",
            "DocumentIndexed",
            "DocumentIngestionFailed",
            "DocumentRetracted",
            "DocumentAccessChanged",
        }
    )

    async def handle(self, session: AsyncSession, recorded: RecordedEvent) -> None:
        """Apply one document event."""
        match registry.decode(recorded):
            case DocumentUploaded() as e:
                await record_access(
                    session,
                    document_id=e.document_id,
                    position=recorded.position,
                    access_groups=e.access_groups,
                    public=e.public,
                    retracted=False,
                )
                statement = insert(ChunkSourceRow).values(
                    document_id=e.document_id,
                    current_version=e.version,
                    title=e.title,
                    access_groups=list(e.access_groups),
                    retracted=False,
                )
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[ChunkSourceRow.document_id],
                        set_={
                            "current_version": e.version,
                            "title": e.title,
                            "access_groups": list(e.access_groups),
                        },
                    )
                )
                await session.execute(
                    update(ChunkRow)
                    .where(ChunkRow.document_id == e.document_id, ChunkRow.version < e.version)
                    .values(searchable=False)
                )
            case DocumentChunked() as e:
                source = await session.get(ChunkSourceRow, e.document_id)
                if source is None or not e.chunks:
                    return
                await session.execute(
                    insert(ChunkRow)
                    .values(
                        [
                            {
                                "chunk_id": c.chunk_id,
                                "document_id": e.document_id,
                                "version": e.version,
                                "chunk_index": c.index,
                                "title": source.title,
                                "heading_path": list(c.heading_path),
                                "text": c.text,
                                "text_sha256": c.text_sha256,
                                "start_offset": c.start,
                                "end_offset": c.end,
                                "token_count": c.token_count,
                                "access_groups": list(source.access_groups),
                                "searchable": False,
                            }
                            for c in e.chunks
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=[ChunkRow.chunk_id])
                )
            case ChunksEmbedded() as e:
                await session.execute(
                    _SET_EMBEDDINGS,
                    {
                        "ids": list(e.chunk_ids),
                        "vectors": [_pgvector_text(v) for v in e.vectors],
                    },
                )
            case DocumentIndexed() as e:
                source = await session.get(ChunkSourceRow, e.document_id)
                if source is None or source.retracted or source.current_version != e.version:
                    return
                await session.execute(
                    update(ChunkRow)
                    .where(ChunkRow.document_id == e.document_id, ChunkRow.version == e.version)
                    .values(searchable=True)
                )
            case DocumentIngestionFailed() as e:
                await session.execute(
                    delete(ChunkRow).where(
                        ChunkRow.document_id == e.document_id, ChunkRow.version == e.version
                    )
                )
            case DocumentRetracted() as e:
                await record_access(
                    session, document_id=e.document_id, position=recorded.position, retracted=True
                )
                await self._source(session, e.document_id, retracted=True)
                await session.execute(
                    update(ChunkRow)
                    .where(ChunkRow.document_id == e.document_id)
                    .values(searchable=False)
                )
            case DocumentAccessChanged() as e:
                await record_access(
                    session,
                    document_id=e.document_id,
                    position=recorded.position,
                    access_groups=e.new_groups,
                    public=e.new_public,
                )
                await self._source(session, e.document_id, access_groups=list(e.new_groups))
                await session.execute(
                    update(ChunkRow)
                    .where(ChunkRow.document_id == e.document_id)
                    .values(access_groups=list(e.new_groups))
                )
            case _:
                pass

    async def _source(
        self, session: AsyncSession, document_id: uuid.UUID, **values: object
    ) -> None:
        await session.execute(
            update(ChunkSourceRow).where(ChunkSourceRow.document_id == document_id).values(**values)
        )

    async def reset(self, session: AsyncSession) -> None:
        """Empty the searchable table (not `document_access`: the commands own it)."""
        await session.execute(delete(ChunkRow))
        await session.execute(delete(ChunkSourceRow))


def _pgvector_text(encoded: str) -> str:
    # pgvector's text form; repr() of a float32 widened to float64 round-trips exactly.
    return "[" + ",".join(repr(float(x)) for x in decode_vector(encoded)) + "]"
