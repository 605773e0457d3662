"""Admin status: the ledger head, each subscriber's position, lag and error, the digest."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ragledger.api.app_services import app_services
from ragledger.api.deps import AdminUser, SessionDep, SettingsDep
from ragledger.events import store
from ragledger.projections.registry import all_subscribers
from ragledger.services.digest_checks import check_stored_digests
from ragledger.services.subscriber_status import subscriber_statuses
from ragledger.web.rendering import render

router = APIRouter()


@router.get("/admin/status", response_class=HTMLResponse)
async def status_page(
    request: Request, session: SessionDep, settings: SettingsDep, _admin: AdminUser
) -> HTMLResponse:
    """What GET /api/v1/health reports, and the newest signed digest if all still match (admin)."""
    head = await store.head(session)
    statuses = await subscriber_statuses(session, all_subscribers(settings))
    # Every stored digest is compared: one that disagrees with the ledger is proof of a
    # rewrite, and then no digest is shown as trusted.
    digests = await check_stored_digests(session, app_services(request.app).signer)
    mismatch = digests.first_mismatch
    digest = None if mismatch is not None else digests.newest_matching
    return render(
        request,
        "status.html",
        {"head": head, "statuses": statuses, "digest": digest, "mismatch": mismatch},
        title="Status",
    )
