"""Reading and writing the Merkle tree's stored nodes, and the tree's size.

The tree's size is the `merkle_tree` projection's checkpoint: the nodes and the
checkpoint commit together, so a reader sees a tree of exactly that many leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.merkle import Node, fold_nodes, range_nodes

TREE_PROJECTION = "merkle_tree"

_READ_NODES = text(
    """
    SELECT n.level, n.node_index, n.hash
    FROM unnest(CAST(:levels AS smallint[]), CAST(:indexes AS bigint[])) AS k(level, node_index)
    JOIN merkle_nodes AS n USING (level, node_index)
    """
)
_WRITE_NODES = text(
    """
    INSERT INTO merkle_nodes (level, node_index, hash)
    SELECT * FROM unnest(
        CAST(:levels AS smallint[]), CAST(:indexes AS bigint[]), CAST(:hashes AS bytea[]))
    """
)
_TREE_SIZE = text("SELECT position FROM subscriber_checkpoints WHERE name = :name")


class MissingNodesError(RuntimeError):
    """The store lacks nodes a tree of this size must have (the tree is behind or damaged)."""


async def read_nodes(session: AsyncSession, wanted: Iterable[Node]) -> dict[Node, bytes]:
    """The stored hashes of `wanted` nodes, in one query; raise if any is missing."""
    keys = sorted(set(wanted))
    if not keys:
        return {}
    rows = await session.execute(
        _READ_NODES,
        {"levels": [level for level, _ in keys], "indexes": [index for _, index in keys]},
    )
    found = {(row[0], row[1]): bytes(row[2]) for row in rows}
    if len(found) != len(keys):
        missing = sorted(set(keys) - set(found))[:3]
        raise MissingNodesError(f"the Merkle tree lacks nodes {missing}")
    return found


async def write_nodes(session: AsyncSession, nodes: Sequence[tuple[int, int, bytes]]) -> None:
    """Insert new nodes (level, index, hash); a node is written once and never changed."""
    if not nodes:
        return
    await session.execute(
        _WRITE_NODES,
        {
            "levels": [n[0] for n in nodes],
            "indexes": [n[1] for n in nodes],
            "hashes": [n[2] for n in nodes],
        },
    )


async def tree_size(session: AsyncSession) -> int:
    """How many leaves the stored tree has (the projection's checkpoint)."""
    value = await session.scalar(_TREE_SIZE, {"name": TREE_PROJECTION})
    return int(value or 0)


async def root_at(session: AsyncSession, size: int) -> bytes:
    """The root hash of the tree of `size` leaves (size >= 1, at most the stored size)."""
    keys = range_nodes(0, size)
    nodes = await read_nodes(session, keys)
    return fold_nodes([nodes[key] for key in keys])
