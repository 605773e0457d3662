"""The witness's judgement on fabricated heads: ok, bad signature, shrunk, fork, rewrite."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ragledger.events.merkle import consistency_ranges, leaf_hash, range_hash, root_of_leaves
from ragledger.services.signing import DigestSigner
from ragledger.services.tree_heads import tree_head_message
from ragledger.services.witness import (
    KeptHead,
    WitnessAlarmError,
    check_extends,
    check_signature,
)

SIGNER = DigestSigner(Ed25519PrivateKey.generate())


def head(leaves: list[bytes], at: str = "2026-12-03T10:00:00.000000Z") -> KeptHead:
    root = root_of_leaves([leaf_hash(x) for x in leaves]).hex()
    return KeptHead(
        tree_size=len(leaves),
        root_hash=root,
        signed_at=at,
        key_id=SIGNER.key_id,
        signature=SIGNER.sign_message(tree_head_message(len(leaves), root, at)),
    )


def proof(leaves: list[bytes], first: int) -> list[str]:
    nodes = {}
    hashes = [leaf_hash(x) for x in leaves]
    for level in range(len(leaves).bit_length()):
        width = 1 << level
        for index in range(len(leaves) // width):
            nodes[(level, index)] = root_of_leaves(hashes[index * width : (index + 1) * width])
    return [range_hash(a, b, nodes).hex() for a, b in consistency_ranges(first, len(leaves))]


LEAVES = [f"event {i}".encode() for i in range(13)]


def test_a_grown_tree_that_extends_the_kept_one_passes() -> None:
    kept, new = head(LEAVES[:5]), head(LEAVES)
    check_signature(new, SIGNER.public_key)
    check_extends(kept, new, proof(LEAVES, 5))
    check_extends(kept, kept, [])


def test_alarms() -> None:
    kept = head(LEAVES[:8])
    with pytest.raises(WitnessAlarmError) as shrunk:
        check_extends(kept, head(LEAVES[:6]), [])
    assert shrunk.value.kind == "shrunk"
    with pytest.raises(WitnessAlarmError) as fork:
        check_extends(kept, head([b"other", *LEAVES[1:8]]), [])
    assert fork.value.kind == "fork"
    rewritten = [b"forged", *LEAVES[1:]]
    with pytest.raises(WitnessAlarmError) as rewrite:
        check_extends(kept, head(rewritten), proof(rewritten, 8))
    assert rewrite.value.kind == "rewrite"
    forged = KeptHead(**{**head(LEAVES).to_json(), "tree_size": 14})
    with pytest.raises(WitnessAlarmError) as bad:
        check_signature(forged, SIGNER.public_key)
    assert bad.value.kind == "bad_signature"
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(WitnessAlarmError, match="pinned key"):
        check_signature(head(LEAVES), stranger)
