"""The witness's judgement: does a newly fetched signed tree head extend the one kept?

Pure: given the kept head, the new head, the consistency proof between them and the
pinned public key, say whether all holds, or which of bad signature, shrunken tree,
fork (two roots for one size) or rewrite (a proof that does not lead from the kept
root to the new one) it is. The CLI (`ragledger audit witness`) fetches and keeps.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ragledger.events.merkle import ProofError, verify_consistency
from ragledger.services.signing import key_id
from ragledger.services.tree_heads import tree_head_message


class WitnessAlarmError(Exception):
    """The server's log misbehaved; `kind` is bad_signature, shrunk, fork or rewrite."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class KeptHead:
    """A signed tree head as the witness keeps it."""

    tree_size: int
    root_hash: str
    signed_at: str
    key_id: str
    signature: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeptHead:
        """From the JSON of GET /audit/tree-heads/latest or the state file."""
        return cls(
            tree_size=int(data["tree_size"]),
            root_hash=str(data["root_hash"]),
            signed_at=str(data["signed_at"]),
            key_id=str(data["key_id"]),
            signature=str(data["signature"]),
        )

    def to_json(self) -> dict[str, Any]:
        """For the state file."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


def check_signature(head: KeptHead, public_key: Ed25519PublicKey) -> None:
    """Raise bad_signature unless the head is signed by `public_key`."""
    expected = key_id(public_key)
    if head.key_id != expected:
        raise WitnessAlarmError(
            "bad_signature", f"the head names key {head.key_id}, the pinned key is {expected}"
        )
    try:
        public_key.verify(
            base64.b64decode(head.signature, validate=True),
            tree_head_message(head.tree_size, head.root_hash, head.signed_at),
        )
    except (InvalidSignature, ValueError):
        raise WitnessAlarmError(
            "bad_signature",
            f"the head of size {head.tree_size} signed at {head.signed_at} has an invalid "
            "signature",
        ) from None


def check_extends(kept: KeptHead, new: KeptHead, proof: list[str]) -> None:
    """Raise shrunk, fork or rewrite unless `new` extends `kept` by the consistency proof."""
    if new.tree_size < kept.tree_size:
        raise WitnessAlarmError(
            "shrunk",
            f"the tree shrank from {kept.tree_size} events (signed {kept.signed_at}) to "
            f"{new.tree_size} (signed {new.signed_at})",
        )
    if new.tree_size == kept.tree_size:
        if new.root_hash != kept.root_hash:
            raise WitnessAlarmError(
                "fork",
                f"two different signed roots for {new.tree_size} events: {kept.root_hash} "
                f"({kept.signed_at}) and {new.root_hash} ({new.signed_at})",
            )
        return
    try:
        verify_consistency(
            first=kept.tree_size,
            second=new.tree_size,
            first_root=bytes.fromhex(kept.root_hash),
            second_root=bytes.fromhex(new.root_hash),
            proof=[bytes.fromhex(p) for p in proof],
        )
    except (ProofError, ValueError) as exc:
        raise WitnessAlarmError(
            "rewrite",
            f"the tree of {new.tree_size} events signed {new.signed_at} does not extend the "
            f"tree of {kept.tree_size} events signed {kept.signed_at}: the ledger's history "
            f"was rewritten or forked ({exc})",
        ) from None
