"""The `audit_document_events` projection: which ledger events concern which document.

The audit ledger view's document filter (`GET /audit/events?document=X`) selects the
document's own stream and every stream whose ContextRetrieved held one of its chunks
(`payload->'chunks' @> [{"document_id": "X"}]`, on the stored payload). The document's
own stream is one index range already; this projection keeps the other part, so that
a page of a popular document is a range scan of (document_id, position) instead of a
merge of tens of thousands of question streams:

- `audit_document_streams`: (stream, document) for each ContextRetrieved that held one
  of the document's chunks, with the position of the first such event;
- `audit_document_events`: (document, position) for every event of a linked stream,
  those before the link included (a question's QuestionAsked precedes its context).

Each batch is applied with set-based statements over its position range, reading the
stored payloads exactly as the view's own query does; the read model is a pure function
of the ledger and rebuilds to the same rows. It reads every event type, since any
event of a linked stream belongs to the document.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.envelope import RecordedEvent
from ragledger.models.audit import AuditDocumentEventRow, AuditDocumentStreamRow
from ragledger.projections.subscriber import Projection

log = structlog.get_logger(__name__)

# The filter binds str(UUID), so only a chunk's document id in that canonical form can
# match it; anything else in the payload is left out rather than cast.
CANONICAL_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

_LINK_STREAMS = text(
    """
    INSERT INTO audit_document_streams (stream_id, document_id, position)
    SELECT DISTINCT ON (c.stream_id, chunk.value->>'document_id')
           c.stream_id, CAST(chunk.value->>'document_id' AS uuid), c.position
    FROM events AS c
    CROSS JOIN LATERAL jsonb_array_elements(c.payload->'chunks') AS chunk(value)
    WHERE c.position BETWEEN :first AND :last
      AND c.event_type = 'ContextRetrieved'
      AND jsonb_typeof(c.payload->'chunks') = 'array'
      AND jsonb_typeof(chunk.value->'document_id') = 'string'
      AND chunk.value->>'document_id' ~ :canonical
    ORDER BY c.stream_id, chunk.value->>'document_id', c.position
    ON CONFLICT DO NOTHING
    RETURNING stream_id, document_id
    """
)
# The batch's events of every linked stream, and the earlier events of the streams
# linked by this batch.
_ADD_EVENTS = text(
    """
    INSERT INTO audit_document_events (document_id, position)
    SELECT l.document_id, e.position
    FROM events AS e
    JOIN audit_document_streams AS l ON l.stream_id = e.stream_id
    WHERE e.position BETWEEN :first AND :last
    UNION ALL
    SELECT n.document_id, e.position
    FROM unnest(CAST(:streams AS text[]), CAST(:documents AS uuid[])) AS n(stream_id, document_id)
    JOIN events AS e ON e.stream_id = n.stream_id AND e.position < :first
    ON CONFLICT DO NOTHING
    """
)


class AuditDocumentEventsProjection(Projection):
    """Maintains `audit_document_streams` and `audit_document_events`."""

    name = "audit_document_events"

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Link the batch's ContextRetrieved streams, then record the linked events."""
        # The runner hands every event after the checkpoint, so the batch is the whole
        # range [first, last].
        first, last = events[0].position, events[-1].position
        linked = (
            await session.execute(
                _LINK_STREAMS, {"first": first, "last": last, "canonical": CANONICAL_UUID}
            )
        ).all()
        await session.execute(
            _ADD_EVENTS,
            {
                "first": first,
                "last": last,
                "streams": [row.stream_id for row in linked],
                "documents": [row.document_id for row in linked],
            },
        )
        if linked:
            log.debug("audit_document_streams_linked", links=len(linked), last=last)

    async def reset(self, session: AsyncSession) -> None:
        """Delete every row of both tables."""
        await session.execute(delete(AuditDocumentEventRow))
        await session.execute(delete(AuditDocumentStreamRow))
