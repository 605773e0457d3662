"""The ledger for auditors: verify the chain, signed digests, export as JSON Lines."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from ragledger.api.app_services import app_services
from ragledger.api.deps import AuditorUser, SessionDep
from ragledger.api.errors import BODY_ERRORS, error_responses
from ragledger.api.request_context import event_metadata
from ragledger.events import store
from ragledger.models.ledger import EventRow
from ragledger.schemas.ledger_audit import (
    DigestCheckPublic,
    DigestPublic,
    HeadPublic,
    PublicKeyPublic,
    SignedDigestPublic,
    VerificationPublic,
)
from ragledger.services import ledger_audit
from ragledger.services.signing import DigestSigner, SignedDigest

router = APIRouter(prefix="/audit", tags=["audit"], responses=error_responses(401, 403))


def _signer(request: Request) -> DigestSigner:
    return app_services(request.app).signer


@router.get("/verify", response_model=VerificationPublic, responses=error_responses(422))
async def verify(
    request: Request,
    auditor: AuditorUser,
    full: Annotated[bool, Query(description="From genesis, not the last signed digest")] = False,
) -> VerificationPublic:
    """Recompute the hash chain and record LedgerVerified (auditor, admin)."""
    run = await ledger_audit.run_verification(
        app_services(request.app).database.sessionmaker,
        _signer(request),
        full=full,
        metadata=event_metadata(request, auditor),
    )
    result = run.result
    return VerificationPublic(
        valid=run.valid,
        checked=result.checked,
        full=run.full,
        from_position=run.from_position,
        head=HeadPublic(position=result.head_position, hash=result.head_hash.hex()),
        first_invalid_position=run.first_invalid_position,
        reason=run.reason,
        digest_position=run.digest_position,
        last_matching_digest_position=run.digests.last_matching_before_mismatch,
        digests_compared=run.digests.compared,
    )


@router.post("/digests", response_model=SignedDigestPublic, status_code=201)
async def sign_digest(
    request: Request, session: SessionDep, auditor: AuditorUser
) -> SignedDigestPublic:
    """Sign the ledger head with the server key and record DigestSigned (auditor, admin)."""
    signer = _signer(request)

    head = await store.head(session)
    digest = signer.sign(head.position, head.hash.hex())
    await ledger_audit.record_digest(
        session, digest, purpose="requested", metadata=event_metadata(request, auditor)
    )
    return SignedDigestPublic(
        digest=DigestPublic(
            position=digest.position,
            hash=digest.hash,
            signed_at=digest.signed_at,
            key_id=digest.key_id,
            signature=digest.signature,
        ),
        public_key=signer.public_key_b64(),
        public_key_pem=signer.public_key_pem(),
    )


@router.get("/public-key", response_model=PublicKeyPublic)
async def public_key(request: Request, _auditor: AuditorUser) -> PublicKeyPublic:
    """The key that signs digests (auditor, admin)."""
    signer = _signer(request)
    return PublicKeyPublic(
        key_id=signer.key_id,
        public_key=signer.public_key_b64(),
        public_key_pem=signer.public_key_pem(),
    )


@router.post(
    "/digests/verify", response_model=DigestCheckPublic, responses=error_responses(*BODY_ERRORS)
)
async def check_digest(
    request: Request, body: DigestPublic, session: SessionDep, auditor: AuditorUser
) -> DigestCheckPublic:
    """Check a digest you kept against today's ledger; a mismatch is recorded (auditor, admin)."""
    digest = SignedDigest(**body.model_dump())
    signature_valid = _signer(request).check(digest)
    stored = await session.scalar(select(EventRow.hash).where(EventRow.position == digest.position))
    matches = stored is not None and bytes(stored).hex() == digest.hash
    if not signature_valid:
        detail = "the signature is not valid for this server's key"
    elif not matches:
        # Signed by us and contradicted by the ledger: proof of a rewrite, recorded as such.
        detail = await ledger_audit.record_kept_digest_mismatch(
            session,
            digest,
            stored_hash=None if stored is None else bytes(stored).hex(),
            metadata=event_metadata(request, auditor),
        )
    else:
        detail = (
            f"the ledger up to position {digest.position} is unchanged since {digest.signed_at}"
        )
    return DigestCheckPublic(
        signature_valid=signature_valid,
        ledger_matches=matches,
        valid=signature_valid and matches,
        detail=detail,
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}},
        **error_responses(422, described={400: "A range outside the ledger, or reversed"}),
    },
)
async def export(
    request: Request,
    session: SessionDep,
    auditor: AuditorUser,
    from_position: Annotated[int | None, Query(ge=1)] = None,
    to_position: Annotated[int | None, Query(ge=1)] = None,
) -> StreamingResponse:
    """Stream events as JSON Lines, then a signed digest of the last one (auditor, admin)."""
    first, last = await ledger_audit.export_range(session, from_position, to_position)
    lines = ledger_audit.export_lines(
        app_services(request.app).database.sessionmaker,
        _signer(request),
        first=first,
        last=last,
        metadata=event_metadata(request, auditor),
    )
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="ledger-{first}-{last}.jsonl"'},
    )
