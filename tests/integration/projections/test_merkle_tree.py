"""The merkle_tree projection and signed tree heads against the real ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select, text

from ragledger.events import store
from ragledger.events.envelope import EventMetadata, NewEvent
from ragledger.events.merkle import (
    ProofError,
    leaf_hash,
    root_of_leaves,
    verify_consistency,
    verify_inclusion,
)
from ragledger.models.merkle import MerkleNodeRow
from ragledger.projections.merkle_tree import MerkleTreeProjection
from ragledger.projections.runner import reset_projection, run_until_caught_up
from ragledger.services import tree_heads
from ragledger.services.errors import BadRequestError, ConflictError
from ragledger.services.merkle_nodes import root_at, tree_size
from ragledger.services.signing import DigestSigner
from ragledger.services.tree_verification import verify_from_tree_head
from tests.ledger_tampering import rewrite_and_rechain

META = EventMetadata(actor_id="test", actor_role="system")


async def _append(db, count: int, *, per_batch: int = 3) -> None:
    for start in range(0, count, per_batch):
        numbers = range(start, min(count, start + per_batch))
        async with db.sessionmaker() as session, session.begin():
            await store.append(
                session,
                "n",
                [NewEvent("Numbered", {"n": n}) for n in numbers],
            )


async def _hashes(db) -> list[bytes]:
    async with db.sessionmaker() as session:
        return [e.hash for e in await store.read_all(session, limit=100_000)]


async def test_the_tree_follows_the_ledger_in_odd_batches_and_proves_every_event(db) -> None:
    await _append(db, 23)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection(), batch_size=5)
    await _append(db, 14, per_batch=7)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection(), batch_size=4)
    hashes = await _hashes(db)
    leaves = [leaf_hash(h) for h in hashes]
    async with db.sessionmaker() as session:
        assert await tree_size(session) == 37
        for size in (1, 2, 3, 8, 16, 17, 36, 37):
            assert await root_at(session, size) == root_of_leaves(leaves[:size])
        for position in (1, 2, 16, 17, 37):
            proof = await tree_heads.inclusion_proof(session, position=position, size=37)
            assert proof.leaf_hash == leaves[position - 1]
            verify_inclusion(
                index=position - 1,
                size=37,
                leaf=leaf_hash(hashes[position - 1]),
                proof=proof.proof,
                root=root_of_leaves(leaves),
            )
        for first in (1, 5, 16, 36, 37):
            consistency = await tree_heads.consistency_proof(session, first=first, second=37)
            verify_consistency(
                first=first,
                second=37,
                first_root=root_of_leaves(leaves[:first]),
                second_root=root_of_leaves(leaves),
                proof=consistency.proof,
            )
        # Every complete subtree, stored once: 37 leaves + 18 + 9 + 4 + 2 + 1.
        assert await session.scalar(select(func.count()).select_from(MerkleNodeRow)) == 71
        with pytest.raises(ConflictError, match="37 leaves so far"):
            await tree_heads.inclusion_proof(session, position=1, size=38)
        with pytest.raises(BadRequestError):
            await tree_heads.inclusion_proof(session, position=5, size=4)
        with pytest.raises(BadRequestError):
            await tree_heads.consistency_proof(session, first=9, second=8)


async def test_a_rebuild_yields_the_same_tree(db) -> None:
    await _append(db, 19)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection(), batch_size=6)
    async with db.sessionmaker() as session:
        before = await root_at(session, 19)
    await reset_projection(db.engine, MerkleTreeProjection())
    async with db.sessionmaker() as session:
        assert await tree_size(session) == 0
    assert await run_until_caught_up(db.engine, MerkleTreeProjection(), batch_size=500)
    async with db.sessionmaker() as session:
        assert await root_at(session, 19) == before


async def test_heads_are_signed_on_the_event_count_and_not_for_heads_alone(db, settings) -> None:
    signer = DigestSigner.from_settings(settings)
    await _append(db, 4)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())

    async def due(interval_s: int = 3600):
        return await tree_heads.sign_tree_head_if_due(
            db.sessionmaker, signer, every_events=5, interval_s=interval_s, metadata=META
        )

    # Fewer events than the count and younger than the interval: not yet; once the
    # interval has passed (0 here), the first head is signed.
    assert await due() is None
    first = await due(interval_s=0)
    assert first is not None
    assert first.tree_size == 4
    assert signer.check_message(first.key_id, first.message(), first.signature)
    await _append(db, 3)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    assert await due() is None  # 4 new leaves (3 + the head itself) < 5, and not old enough
    await _append(db, 1)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    second = await due()
    assert second is not None
    assert second.tree_size == 9
    # With only the head's own event new, the time rule does not sign again.
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    assert (
        await tree_heads.sign_tree_head_if_due(
            db.sessionmaker, signer, every_events=1000, interval_s=0, metadata=META
        )
        is None
    )
    async with db.sessionmaker() as session:
        heads = await tree_heads.list_tree_heads(session, before=None, limit=10)
        assert [h.tree_size for h in heads] == [9, 4]
        assert [h.purpose for h in heads] == ["scheduled", "scheduled"]
        older = await tree_heads.list_tree_heads(session, before=heads[0].position, limit=10)
        assert [h.tree_size for h in older] == [4]


async def test_a_rewritten_history_disagrees_with_the_signed_head_once_rebuilt(
    db, settings
) -> None:
    signer = DigestSigner.from_settings(settings)
    await _append(db, 12)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    async with db.sessionmaker() as session:
        head = await tree_heads.sign_tree_head(session, signer, purpose="requested", metadata=META)
    assert head.tree_size == 12

    await rewrite_and_rechain(db, 2, {"n": 999})
    await reset_projection(db.engine, MerkleTreeProjection())
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    async with db.sessionmaker() as session:
        rebuilt_root = await root_at(session, head.tree_size)
        assert rebuilt_root.hex() != head.root_hash
        size = await tree_size(session)
        proof = await tree_heads.consistency_proof(session, first=head.tree_size, second=size)
    with pytest.raises(ProofError, match="first root"):
        verify_consistency(
            first=head.tree_size,
            second=size,
            first_root=bytes.fromhex(head.root_hash),
            second_root=proof.second_root,
            proof=proof.proof,
        )


async def test_routine_verification_starts_at_the_last_signed_head(db, settings) -> None:
    signer = DigestSigner.from_settings(settings)
    await _append(db, 10)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    async with db.sessionmaker() as session:
        head = await tree_heads.sign_tree_head(session, signer, purpose="requested", metadata=META)
    await _append(db, 6)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    result, start = await verify_from_tree_head(db.sessionmaker, signer, metadata=META)
    assert result.valid, result.reason
    assert start == head.tree_size == 10
    assert result.checked == 7  # the head's own event and the six after it

    # A careful forger rewrites position 2 and recomputes the chain; the chain alone
    # is intact again, but the signed head disagrees (tree kept or rebuilt alike).
    await rewrite_and_rechain(db, 2, {"n": -1})
    result, _ = await verify_from_tree_head(db.sessionmaker, signer, metadata=META)
    assert not result.valid
    assert "disagrees with the tree head of 10 events" in (result.reason or "")
    await reset_projection(db.engine, MerkleTreeProjection())
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    result, _ = await verify_from_tree_head(db.sessionmaker, signer, metadata=META)
    assert not result.valid
    assert "disagrees with the tree head of 10 events" in (result.reason or "")
    async with db.sessionmaker() as session:
        recorded = await store.read_all(session, event_types={"LedgerVerified"}, limit=10)
    assert [e.payload["valid"] for e in recorded] == [True, False, False]


async def test_a_leaf_that_is_not_its_event_is_found(db, settings) -> None:
    signer = DigestSigner.from_settings(settings)
    await _append(db, 5)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    async with db.owner_engine.begin() as conn:
        await conn.execute(
            text("UPDATE merkle_nodes SET hash = sha256('x') WHERE level = 0 AND node_index = 3")
        )
    result, start = await verify_from_tree_head(db.sessionmaker, signer, metadata=META)
    assert start == 0
    assert not result.valid
    assert result.first_invalid_position == 4


async def test_a_proof_is_one_query_whatever_the_tree_size(db) -> None:
    """Proofs fetch every node they need in one query; a tree 16 times bigger adds none."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement)

    async def queries_per_proof(size: int) -> tuple[int, int]:
        async with db.sessionmaker() as session:
            await session.connection()  # the connection's own set-up is not the proof's
            event.listen(db.engine.sync_engine, "before_cursor_execute", count)
            try:
                statements.clear()
                proof = await tree_heads.inclusion_proof(session, position=size // 3, size=size)
                inclusion = len(statements)
                statements.clear()
                await tree_heads.consistency_proof(session, first=size // 2 + 1, second=size)
                consistency = len(statements)
            finally:
                event.remove(db.engine.sync_engine, "before_cursor_execute", count)
        assert len(proof.proof) == (size - 1).bit_length()
        return inclusion, consistency

    await _append(db, 37, per_batch=37)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    assert await queries_per_proof(37) == (1, 1)
    await _append(db, 600 - 37, per_batch=200)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    assert await queries_per_proof(600) == (1, 1)
    # A size the tree has not reached costs a second query, to say so (409, not damage).
    async with db.sessionmaker() as session:
        with pytest.raises(ConflictError, match="600 leaves so far"):
            await tree_heads.consistency_proof(session, first=3, second=601)


async def test_the_projection_reads_hashes_and_edge_in_one_query_per_batch(db) -> None:
    """A batch reads only positions and hashes, with the tree's right edge, in one query."""
    await _append(db, 13, per_batch=13)
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    await _append(db, 9, per_batch=9)
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await run_until_caught_up(db.engine, MerkleTreeProjection())
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    reads = [s for s in statements if "FROM events" in s and "merkle_nodes" in s]
    assert len(reads) == 1
    assert "payload" not in reads[0]
    assert sum("INSERT INTO merkle_nodes" in s for s in statements) == 1
    hashes = await _hashes(db)
    async with db.sessionmaker() as session:
        assert await root_at(session, 22) == root_of_leaves([leaf_hash(h) for h in hashes])
