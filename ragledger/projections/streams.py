"""The `streams` projection: a catalog of every stream with its version and event count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.envelope import RecordedEvent
from ragledger.models.streams import StreamRow
from ragledger.projections.subscriber import Projection


def stream_category(stream_id: str) -> str:
    """The part of a stream id before its first '-' ('document-<uuid>' -> 'document')."""
    return stream_id.split("-", 1)[0]


@dataclass(slots=True)
class _Delta:
    version: int
    count: int
    first_position: int
    last_position: int
    last_event_type: str
    created_at: datetime
    updated_at: datetime


class StreamsProjection(Projection):
    """Upserts one row per stream, aggregating a whole batch into one statement."""

    name = "streams"

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Fold the batch per stream, then upsert each stream once."""
        deltas: dict[str, _Delta] = {}
        for recorded in events:
            delta = deltas.get(recorded.stream_id)
            if delta is None:
                deltas[recorded.stream_id] = _Delta(
                    version=recorded.stream_version,
                    count=1,
                    first_position=recorded.position,
                    last_position=recorded.position,
                    last_event_type=recorded.event_type,
                    created_at=recorded.recorded_at,
                    updated_at=recorded.recorded_at,
                )
            else:
                delta.version = recorded.stream_version
                delta.count += 1
                delta.last_position = recorded.position
                delta.last_event_type = recorded.event_type
                delta.updated_at = recorded.recorded_at
        if not deltas:
            return
        statement = insert(StreamRow).values(
            [
                {
                    "stream_id": stream_id,
                    "category": stream_category(stream_id),
                    "version": d.version,
                    "event_count": d.count,
                    "first_position": d.first_position,
                    "last_position": d.last_position,
                    "last_event_type": d.last_event_type,
                    "created_at": d.created_at,
                    "updated_at": d.updated_at,
                }
                for stream_id, d in deltas.items()
            ]
        )
        excluded = statement.excluded
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[StreamRow.stream_id],
                set_={
                    "version": excluded.version,
                    "event_count": StreamRow.event_count + excluded.event_count,
                    "last_position": excluded.last_position,
                    "last_event_type": excluded.last_event_type,
                    "updated_at": excluded.updated_at,
                },
            )
        )

    async def reset(self, session: AsyncSession) -> None:
        """Empty the catalog."""
        await session.execute(delete(StreamRow))
