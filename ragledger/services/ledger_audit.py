"""Verification runs, signed digests and exports of the ledger, each recorded in it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.events import store
from ragledger.events.codec import GENESIS_HASH, format_timestamp
from ragledger.events.envelope import EventMetadata, NewEvent, RecordedEvent
from ragledger.events.ledger_audit import (
    LEDGER_STREAM,
    DigestSigned,
    LedgerVerificationFailed,
    LedgerVerified,
)
from ragledger.models.ledger import EventRow
from ragledger.services.digest_checks import (
    MAX_LISTED_MISMATCHES,
    DigestCheck,
    DigestMismatch,
    check_stored_digests,
)
from ragledger.services.errors import BadRequestError
from ragledger.services.ledger_verification import ChainVerification, verify_chain
from ragledger.services.signing import DigestSigner, SignedDigest

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

EXPORT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class VerificationRun:
    """A verification: the chain from where it started, and the stored digests against it."""

    result: ChainVerification
    from_position: int
    full: bool
    digests: DigestCheck

    @property
    def valid(self) -> bool:
        """Intact: the chain holds and no validly signed digest disagrees with it."""
        return self.result.valid and self.digests.first_mismatch is None

    @property
    def first_invalid_position(self) -> int | None:
        """Where the chain itself breaks (None when it reads back consistent)."""
        return self.result.first_invalid_position

    @property
    def digest_position(self) -> int | None:
        """The earliest validly signed digest that disagrees with the ledger."""
        mismatch = self.digests.first_mismatch
        return None if mismatch is None else mismatch.digest.position

    @property
    def reason(self) -> str | None:
        """Why the run failed, in words; None when it passed."""
        reasons = []
        mismatch = self.digests.first_mismatch
        if mismatch is not None:
            reasons.append(describe_mismatch(mismatch, self.digests))
        if self.result.reason is not None:
            reasons.append(
                f"the chain breaks at position {self.result.first_invalid_position}: "
                f"{self.result.reason}"
            )
        return "; ".join(reasons) or None


def describe_mismatch(mismatch: DigestMismatch, digests: DigestCheck) -> str:
    """A signed digest that disagrees with the ledger, in words."""
    digest = mismatch.digest
    where = (
        "that position no longer exists"
        if mismatch.stored_hash is None
        else f"the ledger now holds {mismatch.stored_hash} there"
    )
    text = (
        f"signed digest at position {digest.position} (signed {digest.signed_at}) vouches "
        f"for hash {digest.hash}, but {where}: the ledger up to that position was "
        f"rewritten after it was signed"
    )
    if digests.last_matching_before_mismatch is not None:
        text += (
            f" (the digest at position {digests.last_matching_before_mismatch} still "
            f"matches, so the change lies after it)"
        )
    others = len(digests.mismatches) - 1
    if others:
        text += f"; {others} later signed digest(s) disagree too"
    return text


async def _proven_start(session: AsyncSession, digests: DigestCheck) -> tuple[int, bytes] | None:
    """Where an incremental run may start: just before the newest digest that still matches.

    The run then recomputes the digest's own event from its content, so the signed hash
    is proven against the event, not only found in the hash column. Only when every
    stored digest matches: one that disagrees means the ledger was rewritten.
    """
    digest = digests.newest_matching
    if digests.first_mismatch is not None or digest is None or digest.position == 0:
        return None
    prev_hash = await session.scalar(
        select(EventRow.prev_hash).where(EventRow.position == digest.position)
    )
    if prev_hash is None:
        return None
    return digest.position - 1, bytes(prev_hash)


async def run_verification(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    full: bool,
    metadata: EventMetadata,
) -> VerificationRun:
    """Verify from genesis (`full`) or from the newest signed digest; record the outcome.

    Every stored digest whose signature checks is compared with the ledger first, in
    both modes: one that disagrees fails the run (and it then recomputes from genesis to
    name the first broken position, if the chain breaks at all). Otherwise an
    incremental run trusts everything before the newest digest and recomputes from its
    event on. Appends LedgerVerified, or LedgerVerificationFailed.
    """
    async with sessionmaker() as session, sessionmaker() as second_reader:
        digests = await check_stored_digests(session, signer)
        start, start_hash, reported = 0, GENESIS_HASH, 0
        proven = None if full else await _proven_start(session, digests)
        if proven is not None:
            start, start_hash = proven
            reported = start + 1
        result = await verify_chain(
            session, from_position=start, from_hash=start_hash, second_reader=second_reader
        )
    run = VerificationRun(result=result, from_position=reported, full=full, digests=digests)
    async with sessionmaker() as session, session.begin():
        await store.append(session, LEDGER_STREAM, [_outcome_event(run)], metadata=metadata)
    if not run.valid:
        log.error(
            "ledger.verification_failed",
            full=full,
            digest_position=run.digest_position,
            first_invalid_position=run.first_invalid_position,
        )
    return run


def _outcome_event(run: VerificationRun) -> LedgerVerified | LedgerVerificationFailed:
    result = run.result
    if run.valid:
        return LedgerVerified(
            valid=True,
            full=run.full,
            from_position=run.from_position,
            checked=result.checked,
            head_position=result.head_position,
            head_hash=result.head_hash.hex(),
            first_invalid_position=None,
            reason=None,
        )
    mismatch = run.digests.first_mismatch
    return LedgerVerificationFailed(
        source="verification",
        full=run.full,
        from_position=run.from_position,
        checked=result.checked,
        head_position=result.head_position,
        head_hash=result.head_hash.hex(),
        first_invalid_position=result.first_invalid_position,
        reason=run.reason or "",
        digest_position=None if mismatch is None else mismatch.digest.position,
        digest_hash=None if mismatch is None else mismatch.digest.hash,
        digest_signed_at=None if mismatch is None else mismatch.digest.signed_at,
        stored_hash=None if mismatch is None else mismatch.stored_hash,
        last_matching_digest_position=run.digests.last_matching_before_mismatch,
        mismatched_digest_positions=tuple(
            m.digest.position for m in run.digests.mismatches[:MAX_LISTED_MISMATCHES]
        ),
    )


async def record_kept_digest_mismatch(
    session: AsyncSession,
    digest: SignedDigest,
    *,
    stored_hash: str | None,
    metadata: EventMetadata,
) -> str:
    """Record LedgerVerificationFailed for a validly signed digest an auditor brought back.

    Returns the reason in words. Called only when the signature checks and the ledger's
    hash at the digest's position differs: that is proof of a rewrite.
    """
    mismatch = DigestMismatch(digest, stored_hash)
    check = DigestCheck(
        compared=1,
        unverifiable=0,
        newest_matching=None,
        mismatches=(mismatch,),
        last_matching_before_mismatch=None,
    )
    reason = describe_mismatch(mismatch, check)
    head = await store.head(session)
    await store.append(
        session,
        LEDGER_STREAM,
        [
            LedgerVerificationFailed(
                source="kept_digest",
                full=False,
                from_position=digest.position,
                checked=0,
                head_position=head.position,
                head_hash=head.hash.hex(),
                first_invalid_position=None,
                reason=reason,
                digest_position=digest.position,
                digest_hash=digest.hash,
                digest_signed_at=digest.signed_at,
                stored_hash=stored_hash,
                last_matching_digest_position=None,
                mismatched_digest_positions=(digest.position,),
            )
        ],
        metadata=metadata,
    )
    log.error("ledger.kept_digest_disagrees", digest_position=digest.position)
    return reason


async def record_digest(
    session: AsyncSession, digest: SignedDigest, *, purpose: str, metadata: EventMetadata
) -> None:
    """Append DigestSigned for a digest handed out."""
    await store.append(
        session,
        LEDGER_STREAM,
        [
            DigestSigned(
                position=digest.position,
                hash=digest.hash,
                signed_at=digest.signed_at,
                key_id=digest.key_id,
                signature=digest.signature,
                purpose=purpose,
            )
        ],
        metadata=metadata,
    )


async def sign_head(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    purpose: str,
    metadata: EventMetadata,
) -> SignedDigest:
    """Sign the current head and record DigestSigned (which itself follows the head)."""
    async with sessionmaker() as session, session.begin():
        head = await store.head(session)
        digest = signer.sign(head.position, head.hash.hex())
        await record_digest(session, digest, purpose=purpose, metadata=metadata)
    return digest


def export_line(event: RecordedEvent) -> str:
    """One export line: every field the hash covers, plus prev_hash and hash in hex."""
    return json.dumps(
        {
            "position": event.position,
            "event_id": str(event.event_id),
            "stream_id": event.stream_id,
            "stream_version": event.stream_version,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "recorded_at": format_timestamp(event.recorded_at),
            "payload": event.payload,
            "metadata": event.metadata,
            "prev_hash": event.prev_hash.hex(),
            "hash": event.hash.hex(),
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )


async def export_range(
    session: AsyncSession, from_position: int | None, to_position: int | None
) -> tuple[int, int]:
    """The range to export, checked: (first, last); reversed or empty ranges are 400."""
    head = (await store.head(session)).position
    first = 1 if from_position is None else from_position
    last = head if to_position is None else min(to_position, head)
    if first < 1:
        raise BadRequestError("from_position must be at least 1")
    if last < first:
        raise BadRequestError(
            f"nothing to export between {first} and {last} (the ledger head is {head})"
        )
    return first, last


async def export_lines(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    first: int,
    last: int,
    metadata: EventMetadata,
) -> AsyncIterator[str]:
    """JSON lines of positions first..last, then a signed digest of the last line.

    The digest and an AuditExported event are recorded once the last line is out.
    """
    position = first - 1
    last_hash = None
    count = 0
    while position < last:
        async with sessionmaker() as session:
            batch = await store.read_all(session, after=position, up_to=last, limit=EXPORT_BATCH)
        if not batch:
            break
        for event in batch:
            yield export_line(event) + "\n"
            last_hash = event.hash.hex()
            count += 1
        position = batch[-1].position
    assert last_hash is not None
    digest = signer.sign(position, last_hash)
    async with sessionmaker() as session, session.begin():
        await record_digest(session, digest, purpose="export", metadata=metadata)
        await store.append(
            session,
            "audit-exports",
            [
                NewEvent(
                    "AuditExported",
                    {
                        "from_position": first,
                        "to_position": position,
                        "event_count": count,
                        "digest_position": digest.position,
                        "digest_hash": digest.hash,
                    },
                )
            ],
            metadata=metadata,
        )
    yield (
        json.dumps(
            {
                "digest": {
                    "position": digest.position,
                    "hash": digest.hash,
                    "signed_at": digest.signed_at,
                    "key_id": digest.key_id,
                    "signature": digest.signature,
                },
                "public_key": signer.public_key_b64(),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        + "\n"
    )


async def sign_if_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    interval_s: int,
    metadata: EventMetadata,
) -> SignedDigest | None:
    """Sign the head when the newest scheduled digest is older than `interval_s`.

    A transaction-scoped advisory lock makes one process sign when several check at once.
    """
    async with sessionmaker() as session, session.begin():
        locked = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:ns, 3)"), {"ns": store.LOCK_NAMESPACE}
        )
        if not locked:
            return None
        newest = await session.scalar(
            select(EventRow.recorded_at)
            .where(
                EventRow.event_type == "DigestSigned",
                EventRow.payload["purpose"].astext == "scheduled",
            )
            .order_by(EventRow.position.desc())
            .limit(1)
        )
        now = await session.scalar(text("SELECT clock_timestamp()"))
        if newest is not None and (now - newest).total_seconds() < interval_s:
            return None
        head = await store.head(session)
        if head.position == 0:
            return None
        digest = signer.sign(head.position, head.hash.hex())
        await record_digest(session, digest, purpose="scheduled", metadata=metadata)
    return digest


async def scheduled_digests(
    sessionmaker: async_sessionmaker[AsyncSession], signer: DigestSigner, settings: Settings
) -> None:
    """Sign the ledger head once per DIGEST_INTERVAL_S (checked hourly, one process signs)."""
    metadata = EventMetadata(actor_id="system:digests", actor_role="system")
    while True:
        try:
            digest = await sign_if_due(
                sessionmaker,
                signer,
                interval_s=settings.digest_interval_s,
                metadata=metadata,
            )
            if digest is not None:
                log.info("digest_signed", position=digest.position, key_id=digest.key_id)
        except Exception as exc:  # noqa: BLE001  (retried at the next tick)
            log.warning("digest_schedule_failed", error=repr(exc))
        await asyncio.sleep(min(3600, settings.digest_interval_s / 4))
