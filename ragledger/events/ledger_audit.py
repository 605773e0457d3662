"""Events about the ledger itself: verifications and signed digests (stream `ledger`)."""

from __future__ import annotations

from dataclasses import dataclass

from ragledger.events.registry import event_type

LEDGER_STREAM = "ledger"


@event_type
@dataclass(frozen=True, slots=True)
class LedgerVerified:
    """The hash chain was recomputed from `from_position` (0: genesis) to the head."""

    valid: bool
    full: bool
    from_position: int
    checked: int
    head_position: int
    head_hash: str
    first_invalid_position: int | None
    reason: str | None


@event_type
@dataclass(frozen=True, slots=True)
class DigestSigned:
    """The server signed (position, hash, signed_at) with its Ed25519 key."""

    position: int
    hash: str
    signed_at: str
    key_id: str
    signature: str
    purpose: str


@event_type
@dataclass(frozen=True, slots=True)
class TreeHeadSigned:
    """The server signed the Merkle tree's root at `tree_size` (README "Merkle tree").

    `purpose` is `scheduled`, `requested` (an auditor asked) or `receipt` (an answer's
    receipt needed a head covering its events).
    """

    tree_size: int
    root_hash: str
    signed_at: str
    key_id: str
    signature: str
    purpose: str
