"""An answer's receipt: its events, each proved in one signed tree head, checkable offline.

The receipt holds the question stream's events (QuestionAsked, ContextRetrieved,
AnswerGenerated or AnswerFailed, feedback) and the DocumentChunked events whose chunks
formed the context, each with its canonical bytes (as UTF-8 text), prev_hash, hash and
inclusion proof against the newest signed tree head that covers them all (one is
signed, purpose `receipt`, when none does). The reader may read the answer, so the
question stream is shown whole. A DocumentChunked event of a document the reader may
no longer read is *withheld*: its canonical bytes are left out and only its hash is
given, which still proves that the event is in the ledger (the leaf is its hash) but
not what it says. `ops/verify_receipt.py` is the offline check.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.ledger_audit import LEDGER_STREAM
from ragledger.events.merkle import inclusion_ranges, nodes_for, range_hash, range_nodes
from ragledger.models.documents import DocumentRow
from ragledger.models.ledger import EventRow
from ragledger.services.documents import Reader, readable_documents
from ragledger.services.errors import ConflictError
from ragledger.services.merkle_nodes import tree_size
from ragledger.services.provenance import load_provenance
from ragledger.services.signing import DigestSigner
from ragledger.services.tree_heads import TreeHead, head_to_sign, proof_nodes, tree_head_event

RECEIPT_FORMAT = "ragledger-receipt/v1"
WITHHELD_NOTE = (
    "events marked withheld concern a document you may not read now: their canonical "
    "bytes are left out; their hash is proved to be in the ledger, their content is not shown"
)


async def _covering_head(
    session: AsyncSession, signer: DigestSigner, last_position: int
) -> TreeHead | None:
    """The newest recorded head covering `last_position` whose signature checks."""
    rows = await session.execute(
        select(EventRow.position, EventRow.payload)
        .where(EventRow.event_type == "TreeHeadSigned")
        .order_by(EventRow.position.desc())
        .limit(20)
    )
    for position, payload in rows:
        if payload["tree_size"] < last_position:
            return None
        head = TreeHead(
            tree_size=payload["tree_size"],
            root_hash=payload["root_hash"],
            signed_at=payload["signed_at"],
            key_id=payload["key_id"],
            signature=payload["signature"],
            position=position,
            purpose=payload.get("purpose", ""),
        )
        if signer.check_message(head.key_id, head.message(), head.signature):
            return head
    return None


async def _readable(
    session: AsyncSession, reader: Reader, document_ids: set[uuid.UUID]
) -> set[uuid.UUID]:
    if reader.sees_everything or not document_ids:
        return document_ids
    query = readable_documents(reader).where(DocumentRow.document_id.in_(document_ids))
    return {row.document_id for row in (await session.scalars(query)).all()}


async def build_receipt(
    session: AsyncSession,
    signer: DigestSigner,
    *,
    answer_id: uuid.UUID,
    reader: Reader,
    metadata: EventMetadata,
) -> dict[str, Any]:
    """The receipt of an answer the reader may read (403/404 as for the answer itself)."""
    provenance = await load_provenance(session, answer_id, reader)
    if provenance.status == "pending":
        raise ConflictError("the answer is not finished yet; ask for its receipt when it is")
    events = sorted({e.position: e for e in provenance.events}.values(), key=lambda e: e.position)
    last = events[-1].position
    head = await _covering_head(session, signer, last)
    fresh = head is None
    if head is None:
        built = await tree_size(session)
        if built < last:
            raise ConflictError(
                f"the Merkle tree has not reached position {last} yet (it has {built} leaves); "
                "retry in a moment"
            )
        head = await head_to_sign(session, signer)
    size = head.tree_size
    # Every event's path against the one head, fetched in a single query.
    wanted: set[tuple[int, int]] = set(range_nodes(0, size))
    paths = {e.position: inclusion_ranges(e.position - 1, size) for e in events}
    for ranges in paths.values():
        wanted |= nodes_for(ranges)
    wanted |= {(0, e.position - 1) for e in events}
    nodes = await proof_nodes(session, wanted, size)
    if range_hash(0, size, nodes).hex() != head.root_hash:
        raise ConflictError(
            f"the Merkle tree disagrees with the signed tree head of size {size}: "
            "the ledger or the tree was changed since it was signed"
        )
    chunked_documents = {
        uuid.UUID(e.payload["document_id"]) for e in events if e.event_type == "DocumentChunked"
    }
    readable = await _readable(session, reader, chunked_documents)
    rows = await session.execute(
        select(EventRow.position, EventRow.canonical).where(
            EventRow.position.in_([e.position for e in events])
        )
    )
    canonical = {row.position: row.canonical for row in rows}
    items = []
    for e in events:
        withheld = (
            e.event_type == "DocumentChunked"
            and uuid.UUID(e.payload["document_id"]) not in readable
        )
        items.append(
            {
                "position": e.position,
                "event_type": e.event_type,
                "stream_id": e.stream_id,
                "prev_hash": e.prev_hash.hex(),
                "hash": e.hash.hex(),
                "leaf_hash": nodes[(0, e.position - 1)].hex(),
                "withheld": withheld,
                "canonical": None if withheld else bytes(canonical[e.position]).decode("utf-8"),
                "inclusion_proof": [range_hash(a, b, nodes).hex() for a, b in paths[e.position]],
            }
        )
    notes = [
        "canonical is the exact UTF-8 text of the bytes the chain hashed: "
        "hash = sha256(prev_hash || canonical), leaf = sha256(0x00 || hash)",
    ]
    if any(item["withheld"] for item in items):
        notes.append(WITHHELD_NOTE)
    if fresh:
        recorded = await store.commit_then_append(
            session, LEDGER_STREAM, [tree_head_event(head, "receipt")], metadata=metadata
        )
        head = TreeHead(**{**head.to_json(), "position": recorded[0].position})
    return {
        "format": RECEIPT_FORMAT,
        "answer_id": str(answer_id),
        "tree_head": head.to_json(),
        "public_key": signer.public_key_b64(),
        "events": items,
        "notes": notes,
    }
