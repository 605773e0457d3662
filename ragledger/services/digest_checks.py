"""Compare every signed digest stored in the ledger with the ledger as it is now.

A digest signs (position, hash) with the server's key. The hash at a position commits
to every event up to it, so a validly signed digest whose position no longer holds its
hash proves that the ledger up to there was changed after signing, even when the chain
read back is consistent from genesis (a database superuser can rewrite a payload and
recompute every later hash). Such a digest is never skipped: it fails the verification.
A digest that no known key signed proves nothing either way and is only counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events.codec import GENESIS_HASH
from ragledger.models.ledger import EventRow
from ragledger.services.signing import DigestSigner, SignedDigest

log = structlog.get_logger(__name__)

# Positions looked up per query when comparing digests with the ledger.
_LOOKUP_BATCH = 5000
# How many disagreeing digests an event lists (the first one is the proof).
MAX_LISTED_MISMATCHES = 100


@dataclass(frozen=True, slots=True)
class DigestMismatch:
    """A validly signed digest and what the ledger holds at its position now."""

    digest: SignedDigest
    stored_hash: str | None


@dataclass(frozen=True, slots=True)
class DigestCheck:
    """How the stored signed digests compare with the ledger."""

    compared: int
    unverifiable: int
    newest_matching: SignedDigest | None
    mismatches: tuple[DigestMismatch, ...]
    last_matching_before_mismatch: int | None

    @property
    def first_mismatch(self) -> DigestMismatch | None:
        """The disagreeing digest of the lowest position: the change lies at or before it."""
        return self.mismatches[0] if self.mismatches else None


def digest_from_payload(payload: Any) -> SignedDigest | None:
    """The digest a DigestSigned payload holds, or None when it is not well formed."""
    if not isinstance(payload, dict):
        return None
    position = payload.get("position")
    fields = [payload.get(name) for name in ("hash", "signed_at", "key_id", "signature")]
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        return None
    hash_hex, signed_at, key_id, signature = fields
    if not (
        isinstance(hash_hex, str)
        and isinstance(signed_at, str)
        and isinstance(key_id, str)
        and isinstance(signature, str)
    ):
        return None
    return SignedDigest(
        position=position,
        hash=hash_hex.lower(),
        signed_at=signed_at,
        key_id=key_id,
        signature=signature,
    )


def compare_digests(
    digests: Sequence[SignedDigest], stored: dict[int, bytes], *, unverifiable: int = 0
) -> DigestCheck:
    """Compare signed digests with the hashes stored at their positions (pure)."""
    mismatches: list[DigestMismatch] = []
    matching: list[SignedDigest] = []
    for digest in digests:
        found = stored.get(digest.position)
        if found is not None and found.hex() == digest.hash:
            matching.append(digest)
        else:
            mismatches.append(DigestMismatch(digest, None if found is None else found.hex()))
    mismatches.sort(key=lambda item: (item.digest.position, item.digest.signed_at))
    newest = max(matching, key=lambda d: (d.position, d.signed_at), default=None)
    before = None
    if mismatches:
        limit = mismatches[0].digest.position
        below = [d.position for d in matching if d.position < limit]
        before = max(below, default=None)
    return DigestCheck(
        compared=len(digests),
        unverifiable=unverifiable,
        newest_matching=newest,
        mismatches=tuple(mismatches),
        last_matching_before_mismatch=before,
    )


async def check_stored_digests(session: AsyncSession, signer: DigestSigner) -> DigestCheck:
    """Compare every validly signed DigestSigned in the ledger with the ledger's hashes."""
    rows = await session.execute(
        select(EventRow.payload)
        .where(EventRow.event_type == "DigestSigned")
        .order_by(EventRow.position)
    )
    signed: list[SignedDigest] = []
    unverifiable = 0
    for (payload,) in rows:
        digest = digest_from_payload(payload)
        if digest is None or not signer.check(digest):
            unverifiable += 1
            continue
        signed.append(digest)
    if unverifiable:
        # Signed by a key no longer configured (rotated without listing it as retired),
        # or not signed by us at all: neither proves nor disproves anything.
        log.warning("ledger.digests_unverifiable", count=unverifiable)
    stored = await stored_hashes(session, sorted({d.position for d in signed}))
    # A digest of the empty ledger (position 0) vouches for the genesis hash.
    stored[0] = GENESIS_HASH
    return compare_digests(signed, stored, unverifiable=unverifiable)


async def stored_hashes(session: AsyncSession, positions: Sequence[int]) -> dict[int, bytes]:
    """The ledger's hash at each of `positions` that exists."""
    found: dict[int, bytes] = {}
    for start in range(0, len(positions), _LOOKUP_BATCH):
        chunk = list(positions[start : start + _LOOKUP_BATCH])
        rows = await session.execute(
            select(EventRow.position, EventRow.hash).where(EventRow.position.in_(chunk))
        )
        found.update({position: bytes(value) for position, value in rows})
    return found
