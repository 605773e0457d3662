"""Routine verification from the last signed tree head: O(new events), not O(ledger).

The newest `TreeHeadSigned` whose signature checks is the starting point. It is trusted
only if the ledger still agrees with it: the stored tree's root at its size is the
signed root, and the event at that position still hashes to the leaf the signed root
proves (an inclusion proof). Then the stored tree must extend it (a consistency proof
to the tree's current size), the chain is recomputed from that position on, and every
new event's leaf must be its hash. A head that disagrees is proof of tampering: the run
says so (`valid: false`), it never falls back to genesis. Recorded as LedgerVerified.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.ledger_audit import LEDGER_STREAM, LedgerVerified
from ragledger.events.merkle import (
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ragledger.models.ledger import EventRow
from ragledger.services.ledger_verification import ChainVerification, verify_chain
from ragledger.services.merkle_nodes import MissingNodesError, read_nodes, tree_size
from ragledger.services.signing import DigestSigner
from ragledger.services.tree_heads import (
    TreeHead,
    consistency_proof,
    inclusion_proof,
    list_tree_heads,
)

LEAF_CHECK_BATCH = 2000


async def _trusted_head(session: AsyncSession, signer: DigestSigner) -> TreeHead | None:
    """The newest tree head whose signature checks (key current or retired)."""
    before = None
    while True:
        heads = await list_tree_heads(session, before=before, limit=50)
        if not heads:
            return None
        for head in heads:
            if signer.check_message(head.key_id, head.message(), head.signature):
                return head
        before = heads[-1].position


async def _disagreement(session: AsyncSession, head: TreeHead) -> str | None:
    """Why the ledger and the stored tree no longer agree with `head`, or None."""
    size = head.tree_size
    root = bytes.fromhex(head.root_hash)
    event_hash = await session.scalar(select(EventRow.hash).where(EventRow.position == size))
    if event_hash is None:
        return f"the ledger no longer has position {size}, which the tree head signed"
    try:
        proof = await inclusion_proof(session, position=size, size=size)
        verify_inclusion(
            index=size - 1,
            size=size,
            leaf=leaf_hash(bytes(event_hash)),
            proof=proof.proof,
            root=root,
        )
        current = await tree_size(session)
        extension = await consistency_proof(session, first=size, second=current)
        verify_consistency(
            first=size,
            second=current,
            first_root=root,
            second_root=extension.second_root,
            proof=extension.proof,
        )
    except ProofError as exc:
        return (
            f"the ledger or its Merkle tree disagrees with the tree head of {size} events "
            f"signed at {head.signed_at}: {exc}"
        )
    except MissingNodesError as exc:
        return f"the Merkle tree is damaged: {exc}"
    return None


async def _first_wrong_leaf(session: AsyncSession, after: int, up_to: int) -> int | None:
    """The first position in (after, up_to] whose stored leaf is not its event's hash."""
    position = after
    while position < up_to:
        last = min(position + LEAF_CHECK_BATCH, up_to)
        rows = await session.execute(
            select(EventRow.position, EventRow.hash)
            .where(EventRow.position > position, EventRow.position <= last)
            .order_by(EventRow.position)
        )
        hashes = {p: bytes(h) for p, h in rows}
        leaves = await read_nodes(session, [(0, p - 1) for p in range(position + 1, last + 1)])
        for p in range(position + 1, last + 1):
            if p not in hashes or leaves[(0, p - 1)] != leaf_hash(hashes[p]):
                return p
        position = last
    return None


async def verify_from_tree_head(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    metadata: EventMetadata,
) -> tuple[ChainVerification, int]:
    """Verify from the last signed tree head (see module docstring); (result, start)."""
    async with sessionmaker() as session, sessionmaker() as second_reader:
        head = await _trusted_head(session, signer)
        start = 0
        result: ChainVerification
        problem = None
        if head is not None:
            problem = await _disagreement(session, head)
            start = head.tree_size
        if problem is not None:
            ledger_head = await store.head(session)
            result = ChainVerification(
                valid=False,
                checked=0,
                head_position=ledger_head.position,
                head_hash=ledger_head.hash,
                first_invalid_position=start,
                reason=problem,
            )
        else:
            from_hash = (
                bytes(await session.scalar(select(EventRow.hash).where(EventRow.position == start)))
                if start
                else bytes(32)
            )
            result = await verify_chain(
                session, from_position=start, from_hash=from_hash, second_reader=second_reader
            )
            built = await tree_size(session)
            wrong = await _first_wrong_leaf(session, start, min(built, result.head_position))
            if result.valid and wrong is not None:
                result = ChainVerification(
                    valid=False,
                    checked=result.checked,
                    head_position=result.head_position,
                    head_hash=result.head_hash,
                    first_invalid_position=wrong,
                    reason=f"the Merkle tree's leaf for position {wrong} is not its hash",
                )
    async with sessionmaker() as session, session.begin():
        await store.append(
            session,
            LEDGER_STREAM,
            [
                LedgerVerified(
                    valid=result.valid,
                    full=False,
                    from_position=start,
                    checked=result.checked,
                    head_position=result.head_position,
                    head_hash=result.head_hash.hex(),
                    first_invalid_position=result.first_invalid_position,
                    reason=result.reason,
                )
            ],
            metadata=metadata,
        )
    return result, start
