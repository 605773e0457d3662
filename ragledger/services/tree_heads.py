"""Signed tree heads and proofs over the ledger's Merkle tree.

A tree head is (tree size, root hash, signed_at, key id) signed with the server's
Ed25519 key (services/signing.py) over the ASCII text
``ragledger-tree-head/v1\\n<tree_size>\\n<root hash hex>\\n<signed_at>``; each is recorded
as a `TreeHeadSigned` event. A proof is one query: the (level, index) ids of the stored
nodes it needs (services/merkle_nodes.py) are computed here and fetched together; the
tree's size is read only when a node is missing, to tell "not built yet" (409) apart
from damage. At 1M events a proof was two round trips, one of them this size check,
and the round trips were nearly all of its time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import exists, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.events import store
from ragledger.events.codec import format_timestamp
from ragledger.events.envelope import EventMetadata
from ragledger.events.ledger_audit import LEDGER_STREAM, TreeHeadSigned
from ragledger.events.merkle import (
    Node,
    consistency_ranges,
    fold_nodes,
    inclusion_ranges,
    nodes_for,
    range_hash,
    range_nodes,
)
from ragledger.models.ledger import EventRow
from ragledger.services.errors import BadRequestError, ConflictError, NotFoundError
from ragledger.services.merkle_nodes import MissingNodesError, read_nodes, tree_size
from ragledger.services.signing import DigestSigner

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

TREE_HEAD_LOCK_ID = 4  # advisory lock (LOCK_NAMESPACE, 4): one scheduler signs at a time


def tree_head_message(tree_size: int, root_hash_hex: str, signed_at: str) -> bytes:
    """The exact bytes a tree head's signature covers."""
    return (
        f"ragledger-tree-head/v1\n{int(tree_size)}\n{root_hash_hex.lower()}\n{signed_at}"
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head; `position` is where its TreeHeadSigned event is (0: not yet)."""

    tree_size: int
    root_hash: str
    signed_at: str
    key_id: str
    signature: str
    position: int = 0
    purpose: str = ""

    def message(self) -> bytes:
        """The signed bytes."""
        return tree_head_message(self.tree_size, self.root_hash, self.signed_at)

    def to_json(self) -> dict[str, Any]:
        """The head as auditors keep it."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Leaf `position - 1` of the tree of `tree_size` leaves, with its audit path."""

    position: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """Tree `second` extends tree `first`."""

    first: int
    second: int
    first_root: bytes
    second_root: bytes
    proof: tuple[bytes, ...]


def _head_from_event(position: int, payload: dict[str, Any]) -> TreeHead:
    return TreeHead(
        tree_size=payload["tree_size"],
        root_hash=payload["root_hash"],
        signed_at=payload["signed_at"],
        key_id=payload["key_id"],
        signature=payload["signature"],
        position=position,
        purpose=payload.get("purpose", ""),
    )


async def _available(session: AsyncSession, size: int) -> None:
    built = await tree_size(session)
    if size > built:
        raise ConflictError(
            f"the Merkle tree has {built} leaves so far, not {size}; retry in a moment"
        )


async def proof_nodes(
    session: AsyncSession, wanted: Iterable[Node], size: int
) -> dict[Node, bytes]:
    """The `wanted` nodes of the tree of `size` leaves, in one query; 409 if not built yet.

    `wanted` must include `range_nodes(0, size)` (the root's), whose last node exists only
    once the tree has `size` leaves, so a complete answer proves the tree is that big.
    """
    try:
        return await read_nodes(session, wanted)
    except MissingNodesError:
        await _available(session, size)
        raise


async def inclusion_proof(session: AsyncSession, *, position: int, size: int) -> InclusionProof:
    """The audit path of the event at `position` in the tree of `size` leaves."""
    if not 1 <= position <= size:
        raise BadRequestError(f"position {position} is not in a tree of size {size}")
    ranges = inclusion_ranges(position - 1, size)
    leaf_node = (0, position - 1)
    nodes = await proof_nodes(session, {*nodes_for(ranges), *range_nodes(0, size), leaf_node}, size)
    return InclusionProof(
        position=position,
        tree_size=size,
        leaf_hash=nodes[leaf_node],
        root_hash=range_hash(0, size, nodes),
        proof=tuple(range_hash(a, b, nodes) for a, b in ranges),
    )


async def consistency_proof(session: AsyncSession, *, first: int, second: int) -> ConsistencyProof:
    """The proof that the tree of `second` leaves extends the one of `first` leaves."""
    if not 1 <= first <= second:
        raise BadRequestError(f"no consistency proof from size {first} to size {second}")
    ranges = consistency_ranges(first, second)
    nodes = await proof_nodes(
        session, {*nodes_for(ranges), *range_nodes(0, first), *range_nodes(0, second)}, second
    )
    return ConsistencyProof(
        first=first,
        second=second,
        first_root=range_hash(0, first, nodes),
        second_root=range_hash(0, second, nodes),
        proof=tuple(range_hash(a, b, nodes) for a, b in ranges),
    )


async def list_tree_heads(
    session: AsyncSession, *, before: int | None, limit: int
) -> list[TreeHead]:
    """Signed tree heads, newest first, recorded before ledger position `before`."""
    query = select(EventRow.position, EventRow.payload).where(
        EventRow.event_type == "TreeHeadSigned"
    )
    if before is not None:
        query = query.where(EventRow.position < before)
    rows = await session.execute(query.order_by(EventRow.position.desc()).limit(limit))
    return [_head_from_event(position, payload) for position, payload in rows]


async def latest_tree_head(session: AsyncSession) -> TreeHead:
    """The newest signed tree head; 404 when none was signed yet."""
    heads = await list_tree_heads(session, before=None, limit=1)
    if not heads:
        raise NotFoundError("no tree head has been signed yet")
    return heads[0]


async def head_to_sign(session: AsyncSession, signer: DigestSigner) -> TreeHead:
    """A head over the whole stored tree, signed now (not yet recorded)."""
    size = await tree_size(session)
    if size == 0:
        raise ConflictError("the Merkle tree is empty; nothing to sign yet")
    keys = range_nodes(0, size)
    nodes = await read_nodes(session, keys)
    root = fold_nodes([nodes[key] for key in keys]).hex()
    at = format_timestamp(datetime.now(UTC))
    return TreeHead(
        tree_size=size,
        root_hash=root,
        signed_at=at,
        key_id=signer.key_id,
        signature=signer.sign_message(tree_head_message(size, root, at)),
    )


def tree_head_event(head: TreeHead, purpose: str) -> TreeHeadSigned:
    """The event recording a signed head."""
    return TreeHeadSigned(
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        signed_at=head.signed_at,
        key_id=head.key_id,
        signature=head.signature,
        purpose=purpose,
    )


async def sign_tree_head(
    session: AsyncSession, signer: DigestSigner, *, purpose: str, metadata: EventMetadata
) -> TreeHead:
    """Sign the stored tree now and record TreeHeadSigned after committing the reads."""
    head = await head_to_sign(session, signer)
    recorded = await store.commit_then_append(
        session, LEDGER_STREAM, [tree_head_event(head, purpose)], metadata=metadata
    )
    return TreeHead(**{**head.to_json(), "position": recorded[0].position, "purpose": purpose})


async def sign_tree_head_if_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    every_events: int,
    interval_s: int,
    metadata: EventMetadata,
) -> TreeHead | None:
    """Sign when `every_events` leaves arrived since the last head, or `interval_s` passed.

    The time rule only fires when something other than tree heads arrived, so an idle
    ledger does not grow by one head per interval. One process signs at a time.
    """
    async with sessionmaker() as session, session.begin():
        locked = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:ns, :id)"),
            {"ns": store.LOCK_NAMESPACE, "id": TREE_HEAD_LOCK_ID},
        )
        if not locked:
            return None
        size = await tree_size(session)
        heads = await list_tree_heads(session, before=None, limit=1)
        last = heads[0] if heads else None
        signed_size = last.tree_size if last else 0
        if size <= signed_size:
            return None
        due = size - signed_size >= every_events
        if not due:
            # Time runs from the last head, or from the first event before any head.
            since = await session.scalar(
                select(EventRow.recorded_at).where(
                    EventRow.position == (last.position if last else 1)
                )
            )
            now = await session.scalar(text("SELECT clock_timestamp()"))
            old = since is not None and (now - since).total_seconds() >= interval_s
            news = await session.scalar(
                select(
                    exists().where(
                        EventRow.position > signed_size,
                        EventRow.position <= size,
                        EventRow.event_type != "TreeHeadSigned",
                    )
                )
            )
            due = old and bool(news)
        if not due:
            return None
        head = await head_to_sign(session, signer)
        await store.append(
            session, LEDGER_STREAM, [tree_head_event(head, "scheduled")], metadata=metadata
        )
    return head


async def scheduled_tree_heads(
    sessionmaker: async_sessionmaker[AsyncSession], signer: DigestSigner, settings: Settings
) -> None:
    """Sign tree heads per TREE_HEAD_EVERY_EVENTS / TREE_HEAD_INTERVAL_S until cancelled."""
    metadata = EventMetadata(actor_id="system:tree-heads", actor_role="system")
    while True:
        try:
            head = await sign_tree_head_if_due(
                sessionmaker,
                signer,
                every_events=settings.tree_head_every_events,
                interval_s=settings.tree_head_interval_s,
                metadata=metadata,
            )
            if head is not None:
                log.info("tree_head_signed", tree_size=head.tree_size, key_id=head.key_id)
        except Exception as exc:  # noqa: BLE001  (retried at the next tick)
            log.warning("tree_head_schedule_failed", error=repr(exc))
        await asyncio.sleep(settings.tree_head_check_s)
