"""Integrity: run the chain verification, the signed digests, and how to export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from ragledger.api.app_services import app_services
from ragledger.api.deps import AuditorUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.events import store
from ragledger.models.ledger import EventRow
from ragledger.services import ledger_audit
from ragledger.services.audit.recorded_views import record_view
from ragledger.services.signing import SignedDigest
from ragledger.web.rendering import render

router = APIRouter()
RECENT_DIGESTS = 10


async def _integrity(
    request: Request, session: SessionDep, run: object | None = None
) -> HTMLResponse:
    signer = app_services(request.app).signer
    head = await store.head(session)
    rows = await session.execute(
        select(EventRow.position, EventRow.payload)
        .where(EventRow.event_type == "DigestSigned")
        .order_by(EventRow.position.desc())
        .limit(RECENT_DIGESTS)
    )
    digests = []
    for position, payload in rows:
        digest = SignedDigest(
            position=payload["position"],
            hash=payload["hash"],
            signed_at=payload["signed_at"],
            key_id=payload["key_id"],
            signature=payload["signature"],
        )
        stored = await session.scalar(
            select(EventRow.hash).where(EventRow.position == digest.position)
        )
        digests.append(
            {
                "digest": digest,
                "recorded_at_position": position,
                "signature_valid": signer.check(digest),
                "ledger_matches": stored is not None and bytes(stored).hex() == digest.hash,
            }
        )
    return render(
        request,
        "integrity.html",
        {
            "head": head,
            "digests": digests,
            "run": run,
            "key_id": signer.key_id,
            "public_key_pem": signer.public_key_pem(),
            "public_key_b64": signer.public_key_b64(),
        },
        title="Integrity",
    )


@router.get("/audit/integrity", response_class=HTMLResponse)
async def integrity_page(
    request: Request, session: SessionDep, auditor: AuditorUser
) -> HTMLResponse:
    """The head, the recent signed digests checked, and the export's instructions."""
    response = await _integrity(request, session)
    await record_view(
        session,
        auditor_id=auditor.id,
        view="integrity",
        filters={"digests": (str(RECENT_DIGESTS),)},
        item_count=1,
        metadata=event_metadata(request, auditor),
    )
    return response


@router.post("/audit/integrity/verify", response_class=HTMLResponse)
async def verify_submit(
    request: Request,
    session: SessionDep,
    auditor: AuditorUser,
    full: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    """Recompute the chain and record LedgerVerified, as GET /api/v1/audit/verify does."""
    run = await ledger_audit.run_verification(
        app_services(request.app).database.sessionmaker,
        app_services(request.app).signer,
        full=full,
        metadata=event_metadata(request, auditor),
    )
    return await _integrity(request, session, run)
