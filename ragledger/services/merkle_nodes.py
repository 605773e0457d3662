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
# The next leaves' event hashes (position, hash only: the tree needs nothing else of an
# event) and the right edge of the tree before them, in one round trip; edge rows are
# told apart by level >= 0.
_LEAVES_AND_EDGE = text(
    """
    (SELECT CAST(-1 AS smallint) AS level, e.position AS node_index, e.hash
     FROM events AS e
     WHERE e.position > :after AND e.position <= :up_to
     ORDER BY e.position
     LIMIT :limit)
    UNION ALL
    SELECT n.level, n.node_index, n.hash
    FROM unnest(CAST(:levels AS smallint[]), CAST(:indexes AS bigint[])) AS k(level, node_index)
    JOIN merkle_nodes AS n USING (level, node_index)
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


async def read_leaves_and_edge(
    session: AsyncSession, *, after: int, up_to: int, limit: int
) -> tuple[list[tuple[int, bytes]], dict[Node, bytes]]:
    """The (position, hash) of events in (after, up_to], at most `limit`, in order, and the
    tree of `after` leaves' right edge (`range_nodes(0, after)`), in one query."""
    keys = range_nodes(0, after)
    rows = await session.execute(
        _LEAVES_AND_EDGE,
        {
            "after": after,
            "up_to": up_to,
            "limit": limit,
            "levels": [level for level, _ in keys],
            "indexes": [index for _, index in keys],
        },
    )
    leaves: list[tuple[int, bytes]] = []
    edge: dict[Node, bytes] = {}
    for level, index, value in rows:
        if level < 0:
            leaves.append((index, bytes(value)))
        else:
            edge[(level, index)] = bytes(value)
    if len(edge) != len(keys):
        missing = sorted(set(keys) - set(edge))[:3]
        raise MissingNodesError(f"the Merkle tree lacks nodes {missing}")
    leaves.sort()
    return leaves, edge


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
