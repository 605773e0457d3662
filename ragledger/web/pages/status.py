"""Admin status: the ledger head, each subscriber's position, lag and error, the digest."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ragledger.api.deps import AdminUser, SessionDep, SettingsDep
from ragledger.events import store
from ragledger.projections.registry import all_subscribers
from ragledger.services.ledger_audit import last_trusted_digest
from ragledger.services.subscriber_status import subscriber_statuses
from ragledger.web.rendering import render

router = APIRouter()


@router.get("/admin/status", response_class=HTMLResponse)
async def status_page(
    request: Request, session: SessionDep, settings: SettingsDep, _admin: AdminUser
) -> HTMLResponse:
    """What GET /api/v1/health reports, and the last trusted signed digest (admin)."""
    head = await store.head(session)
    statuses = await subscriber_statuses(session, all_subscribers(settings))
    digest = await last_trusted_digest(session, request.app.state.signer)
    return render(
        request,
        "status.html",
        {"head": head, "statuses": statuses, "digest": digest},
        title="Status",
    )
