"""The Merkle tree over the ledger: every complete subtree's hash, by (level, index).

Node (level, node_index) is the RFC 9162 hash of the leaves
[node_index * 2**level, (node_index + 1) * 2**level), leaf i being the event at position
i + 1 (README "Merkle tree"). The `merkle_tree` projection writes a node once its last
leaf has arrived and never changes it, so an inclusion or consistency proof is one
lookup of at most a few hundred primary keys, never a scan. About two rows per event
(32-byte hashes); a rebuild recomputes them from `events.hash`.

Signed tree heads are `TreeHeadSigned` events in the ledger, not rows here.

Revision ID: 0018_merkle_tree
Revises: 0016_grounded_answers
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018_merkle_tree"
down_revision: str | None = "0016_grounded_answers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Default privileges from 0001 already grant the app role DML on new tables.
    op.execute(
        """
        CREATE TABLE merkle_nodes (
            level smallint NOT NULL,
            node_index bigint NOT NULL,
            hash bytea NOT NULL,
            CONSTRAINT pk_merkle_nodes PRIMARY KEY (level, node_index),
            CONSTRAINT ck_merkle_nodes_hash_length CHECK (octet_length(hash) = 32)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE merkle_nodes")
