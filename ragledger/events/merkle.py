"""The Merkle tree over the ledger (RFC 9162 section 2.1): hashing, proof shapes, checks.

Leaf ``i`` (from 0) is the event at position ``i + 1``; its leaf data is that event's
32-byte chain hash, so ``leaf_hash = SHA-256(0x00 || hash)`` and an interior node is
``SHA-256(0x01 || left || right)``. The tree of size ``n`` covers positions ``1..n``.
Node ``(level, index)`` is the complete subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; the store keeps every such node once the
tree has reached its last leaf, so any proof is a handful of stored nodes (see
`range_nodes`). Everything here is pure; docs/ledger-format.md ("The Merkle tree,
exactly") is the specification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]
"""(level, index) of a complete subtree."""


class ProofError(ValueError):
    """A proof does not verify; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(size: int) -> int:
    """The largest power of two strictly below `size` (size >= 2), RFC 9162's k."""
    return 1 << ((size - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees whose fold (right to left) is MTH(D[start:end]).

    Valid for the ranges proofs use, whose start is a multiple of the smallest power of
    two at least as large as the range; left to right, sizes decreasing.
    """
    nodes = []
    while start < end:
        size = 1 << ((end - start).bit_length() - 1)
        level = size.bit_length() - 1
        nodes.append((level, start >> level))
        start += size
    return nodes


def fold_nodes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its `range_nodes` hashes."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def range_hash(start: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[start:end]) from stored complete subtrees."""
    return fold_nodes([nodes[node] for node in range_nodes(start, end)])


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes form PATH(index, D[0:size]), in proof order (leaf first)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The ranges whose hashes form PROOF(first, D[0:second]), in proof order."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    ranges = []
    start, end, m, whole = 0, second, first, True
    while end - start != m:
        k = split_point(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    if not whole:
        ranges.append((start, end))
    return ranges[::-1]


def nodes_for(ranges: Sequence[tuple[int, int]]) -> set[Node]:
    """Every stored node the ranges need."""
    return {node for start, end in ranges for node in range_nodes(start, end)}


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH of leaf hashes held in memory (a rebuild, tests)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def verify_inclusion(
    *, index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2; raise ProofError unless `leaf` is at `index` under `root`."""
    if index >= size or index < 0:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the inclusion proof does not lead to the root hash")


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2; raise ProofError unless tree `second` extends tree `first`."""
    if first < 0 or second < first:
        raise ProofError(f"a tree of size {second} cannot extend one of size {first}")
    if first == second:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("two different roots for the same tree size")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    if fr != first_root:
        raise ProofError("the consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the consistency proof does not lead to the second root")
