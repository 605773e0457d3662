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
from ragledger.events.ledger_audit import LEDGER_STREAM, DigestSigned, LedgerVerified
from ragledger.models.ledger import EventRow
from ragledger.services.errors import BadRequestError
from ragledger.services.ledger_verification import ChainVerification, verify_chain
from ragledger.services.signing import DigestSigner, SignedDigest

if TYPE_CHECKING:
    from ragledger.core.settings import Settings

log = structlog.get_logger(__name__)

EXPORT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class VerificationRun:
    """A verification and where it started from."""

    result: ChainVerification
    from_position: int
    full: bool


async def last_trusted_digest(session: AsyncSession, signer: DigestSigner) -> SignedDigest | None:
    """The newest DigestSigned whose signature checks and whose hash the ledger still has."""
    rows = await session.execute(
        select(EventRow.payload)
        .where(EventRow.event_type == "DigestSigned")
        .order_by(EventRow.position.desc())
        .limit(50)
    )
    for (payload,) in rows:
        digest = SignedDigest(
            position=payload["position"],
            hash=payload["hash"],
            signed_at=payload["signed_at"],
            key_id=payload["key_id"],
            signature=payload["signature"],
        )
        if not signer.check(digest):
            continue
        stored = await session.scalar(
            select(EventRow.hash).where(EventRow.position == digest.position)
        )
        if stored is not None and bytes(stored).hex() == digest.hash:
            return digest
    return None


async def run_verification(
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: DigestSigner,
    *,
    full: bool,
    metadata: EventMetadata,
) -> VerificationRun:
    """Verify from genesis (`full`) or from the last trusted signed digest; record it.

    Incremental runs trust everything up to the digest: the digest's signature proves
    that position's hash was what the server saw then, and the chain after it is
    recomputed. A full run trusts nothing.
    """
    async with sessionmaker() as session, sessionmaker() as second_reader:
        start, start_hash = 0, GENESIS_HASH
        if not full:
            digest = await last_trusted_digest(session, signer)
            if digest is not None:
                start, start_hash = digest.position, bytes.fromhex(digest.hash)
        result = await verify_chain(
            session, from_position=start, from_hash=start_hash, second_reader=second_reader
        )
    async with sessionmaker() as session, session.begin():
        await store.append(
            session,
            LEDGER_STREAM,
            [
                LedgerVerified(
                    valid=result.valid,
                    full=full,
                    from_position=start,
                    checked=result.checked,
                    head_position=result.head_position,
                    head_hash=result.head_hash.hex(),
                    first_invalid_position=result.first_invalid_position,
                    reason=result.reason,
                )
            ],
            metadata=metadata,
        )
    return VerificationRun(result=result, from_position=start, full=full)


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
