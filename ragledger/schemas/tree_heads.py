"""HTTP shapes of signed tree heads, Merkle proofs and answer receipts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TreeHeadPublic(BaseModel):
    """A signed tree head: keep it to prove later that the ledger only grew."""

    tree_size: int
    root_hash: str = Field(description="Hex of the RFC 9162 root over positions 1..tree_size")
    signed_at: str
    key_id: str
    signature: str = Field(
        description="Ed25519, base64, over "
        "'ragledger-tree-head/v1\\n<tree_size>\\n<root_hash>\\n<signed_at>' (ASCII)"
    )
    position: int = Field(description="Where the TreeHeadSigned event is in the ledger")
    purpose: str


class TreeHeadPage(BaseModel):
    """Signed tree heads, newest first; pass `next_before` as `before` for the next page."""

    items: list[TreeHeadPublic]
    next_before: int | None


class InclusionProofPublic(BaseModel):
    """The audit path of one event (leaf position - 1) in the tree of `tree_size` leaves."""

    position: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    proof: list[str]


class ConsistencyProofPublic(BaseModel):
    """The proof that the tree of `second` leaves extends the tree of `first` leaves."""

    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


class ReceiptPublic(BaseModel):
    """An answer's receipt: check it offline with ops/verify_receipt.py (docs/auditors.md)."""

    format: str
    answer_id: str
    tree_head: dict[str, Any]
    public_key: str
    events: list[dict[str, Any]]
    notes: list[str]
