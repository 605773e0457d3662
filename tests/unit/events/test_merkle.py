"""The ledger's Merkle tree against RFC 9162 written out directly, and public test vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragledger.events.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    range_hash,
    root_of_leaves,
    verify_consistency,
    verify_inclusion,
)

# --- RFC 9162 section 2.1, transcribed as recursion (the independent reference) ----------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as section 2.1.1 defines it."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), section 2.1.3.1."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), section 2.1.4.1."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


# --- the implementation, with nodes computed the way the store keeps them --------------


def stored_nodes(data: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree (level, index) of the tree over `data`."""
    nodes = {(0, i): leaf_hash(x) for i, x in enumerate(data)}
    level, width = 0, len(data)
    while width > 1:
        for i in range(width // 2):
            nodes[(level + 1, i)] = node_hash(nodes[(level, 2 * i)], nodes[(level, 2 * i + 1)])
        level, width = level + 1, width // 2
    return nodes


def inclusion_proof(nodes, index: int, size: int) -> list[bytes]:
    return [range_hash(a, b, nodes) for a, b in inclusion_ranges(index, size)]


def consistency_proof(nodes, first: int, second: int) -> list[bytes]:
    return [range_hash(a, b, nodes) for a, b in consistency_ranges(first, second)]


def _leaves(n: int) -> list[bytes]:
    return [f"event {i}".encode() for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=130), st.data())
def test_inclusion_proofs_match_the_rfc_and_verify(size: int, data) -> None:
    leaves = _leaves(size)
    nodes = stored_nodes(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = ref_mth(leaves)
    assert range_hash(0, size, nodes) == root == root_of_leaves([leaf_hash(x) for x in leaves])
    proof = inclusion_proof(nodes, index, size)
    assert proof == ref_path(index, leaves)
    verify_inclusion(index=index, size=size, leaf=leaf_hash(leaves[index]), proof=proof, root=root)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=130), st.data())
def test_consistency_proofs_match_the_rfc_and_verify(second: int, data) -> None:
    leaves = _leaves(second)
    nodes = stored_nodes(leaves)
    first = data.draw(st.integers(min_value=1, max_value=second))
    proof = consistency_proof(nodes, first, second)
    assert proof == ref_subproof(first, leaves, True)
    verify_consistency(
        first=first,
        second=second,
        first_root=ref_mth(leaves[:first]),
        second_root=ref_mth(leaves),
        proof=proof,
    )


def _flip(value: bytes, byte: int, bit: int) -> bytes:
    changed = bytearray(value)
    changed[byte % len(changed)] ^= 1 << bit
    return bytes(changed)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=70), st.data())
def test_flipping_any_bit_of_leaf_proof_or_root_fails_inclusion(size: int, data) -> None:
    leaves = _leaves(size)
    nodes = stored_nodes(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    leaf, root = leaf_hash(leaves[index]), ref_mth(leaves)
    proof = inclusion_proof(nodes, index, size)
    byte, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
    target = data.draw(st.sampled_from(["leaf", "root", "proof"]))
    if target == "leaf":
        leaf = _flip(leaf, byte, bit)
    elif target == "root":
        root = _flip(root, byte, bit)
    else:
        which = data.draw(st.integers(0, len(proof) - 1))
        proof[which] = _flip(proof[which], byte, bit)
    with pytest.raises(ProofError):
        verify_inclusion(index=index, size=size, leaf=leaf, proof=proof, root=root)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=70), st.data())
def test_flipping_any_bit_of_proof_or_roots_fails_consistency(second: int, data) -> None:
    leaves = _leaves(second)
    nodes = stored_nodes(leaves)
    first = data.draw(st.integers(min_value=1, max_value=second - 1))
    proof = consistency_proof(nodes, first, second)
    first_root, second_root = ref_mth(leaves[:first]), ref_mth(leaves)
    byte, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
    target = data.draw(st.sampled_from(["first", "second", "proof"]))
    if target == "first":
        first_root = _flip(first_root, byte, bit)
    elif target == "second":
        second_root = _flip(second_root, byte, bit)
    else:
        which = data.draw(st.integers(0, len(proof) - 1))
        proof[which] = _flip(proof[which], byte, bit)
    with pytest.raises(ProofError):
        verify_consistency(
            first=first,
            second=second,
            first_root=first_root,
            second_root=second_root,
            proof=proof,
        )


def test_a_rewritten_early_leaf_breaks_consistency_with_the_old_root() -> None:
    leaves = _leaves(20)
    old_root = ref_mth(leaves[:10])
    rewritten = [b"forged", *leaves[1:]]
    nodes = stored_nodes(rewritten)
    with pytest.raises(ProofError, match="first root"):
        verify_consistency(
            first=10,
            second=20,
            first_root=old_root,
            second_root=ref_mth(rewritten),
            proof=consistency_proof(nodes, 10, 20),
        )


# --- Certificate Transparency test vectors ----------------------------------------------
# From github.com/transparency-dev/merkle (Apache-2.0): testonly/constants.go (leaf inputs,
# node and root hashes of the 8-leaf tree) and proof/verify_test.go (inclusionProofs,
# consistencyProofs; their leaf numbers are 1-based). The same vectors were in
# google/certificate-transparency's merkle_tree_test.cc.

CT_LEAVES = [
    bytes.fromhex(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (1, 1, []),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_ct_roots() -> None:
    nodes = stored_nodes(CT_LEAVES)
    for size in range(1, 9):
        assert range_hash(0, size, nodes).hex() == CT_ROOTS[size - 1]
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(("leaf", "size", "expected"), CT_INCLUSION)
def test_ct_inclusion_vectors(leaf: int, size: int, expected: list[str]) -> None:
    nodes = stored_nodes(CT_LEAVES)
    proof = inclusion_proof(nodes, leaf - 1, size)
    assert [p.hex() for p in proof] == expected
    verify_inclusion(
        index=leaf - 1,
        size=size,
        leaf=leaf_hash(CT_LEAVES[leaf - 1]),
        proof=proof,
        root=bytes.fromhex(CT_ROOTS[size - 1]),
    )


@pytest.mark.parametrize(("first", "second", "expected"), CT_CONSISTENCY)
def test_ct_consistency_vectors(first: int, second: int, expected: list[str]) -> None:
    nodes = stored_nodes(CT_LEAVES)
    proof = consistency_proof(nodes, first, second)
    assert [p.hex() for p in proof] == expected
    verify_consistency(
        first=first,
        second=second,
        first_root=bytes.fromhex(CT_ROOTS[first - 1]),
        second_root=bytes.fromhex(CT_ROOTS[second - 1]),
        proof=proof,
    )


def test_bad_shapes_are_refused() -> None:
    leaf = leaf_hash(b"x")
    with pytest.raises(ProofError, match="outside"):
        verify_inclusion(index=1, size=1, leaf=leaf, proof=[], root=leaf)
    with pytest.raises(ProofError, match="shorter"):
        verify_inclusion(index=0, size=2, leaf=leaf, proof=[], root=leaf)
    with pytest.raises(ProofError, match="cannot extend"):
        verify_consistency(first=3, second=2, first_root=leaf, second_root=leaf, proof=[])
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(first=1, second=2, first_root=leaf, second_root=leaf, proof=[])
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_ranges(5, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_ranges(0, 5)
