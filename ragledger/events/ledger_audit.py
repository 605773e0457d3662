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
class LedgerVerificationFailed:
    """The ledger was found changed: its chain breaks, or a signed digest disagrees with it.

    `source` is `verification` (a run of the chain check) or `kept_digest` (a digest an
    auditor brought back). A validly signed digest whose position no longer holds its
    hash is proof of a rewrite even when the chain read back is consistent from genesis
    (a superuser can recompute every later hash); `digest_position` is the earliest such
    digest and `last_matching_digest_position` the newest one below it that still
    matches, so the change lies between the two. `first_invalid_position` is where the
    chain itself breaks, when it does.
    """

    source: str
    full: bool
    from_position: int
    checked: int
    head_position: int
    head_hash: str
    first_invalid_position: int | None
    reason: str
    digest_position: int | None
    digest_hash: str | None
    digest_signed_at: str | None
    stored_hash: str | None
    last_matching_digest_position: int | None
    mismatched_digest_positions: tuple[int, ...]


@event_type
@dataclass(frozen=True, slots=True)
class TreeHeadSigned:
    """The server signed the Merkle tree's root at `tree_size` (docs/ledger-format.md).

    `purpose` is `scheduled`, `requested` (an auditor asked) or `receipt` (an answer's
    receipt needed a head covering its events).
    """

    tree_size: int
    root_hash: str
    signed_at: str
    key_id: str
    signature: str
    purpose: str
