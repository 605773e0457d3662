"""The Merkle tree's stored complete subtrees (migration 0018_merkle_tree)."""

from __future__ import annotations

from sqlalchemy import BigInteger, SmallInteger
from sqlalchemy.dialects.postgresql import BYTEA
from sqlalchemy.orm import Mapped, mapped_column

from ragledger.models.base import Base


class MerkleNodeRow(Base):
    """The hash of the complete subtree over leaves [index * 2**level, (index + 1) * 2**level)."""

    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    node_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(BYTEA)
