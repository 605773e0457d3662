"""Admin anomalies: the inbox, newest first, and acknowledging one."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ragledger.api.deps import AdminUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.services import anomalies as anomalies_service
from ragledger.services.errors import DomainError
from ragledger.web.paging import PAGE_SIZE, Pager, back_query, page_number
from ragledger.web.rendering import render

router = APIRouter()


async def _page(
    request: Request,
    session: SessionDep,
    *,
    page: int = 1,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    number = page_number(page)
    query = anomalies_service.inbox_query()
    rows = list(await session.scalars(query.offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    return render(
        request,
        "anomalies.html",
        {
            "rows": rows[:PAGE_SIZE],
            "pager": Pager(number, number > 1, len(rows) > PAGE_SIZE),
            "error": error,
            "current_query": f"page={number}",
        },
        status_code=status_code,
        title="Anomalies",
    )


@router.get("/admin/anomalies", response_class=HTMLResponse)
async def anomalies_page(
    request: Request, session: SessionDep, _admin: AdminUser, page: int = 1
) -> HTMLResponse:
    """The anomalies inbox, newest first (admin)."""
    return await _page(request, session, page=page)


@router.post("/admin/anomalies/{anomaly_id}/acknowledge", response_model=None)
async def acknowledge(
    request: Request,
    anomaly_id: uuid.UUID,
    session: SessionDep,
    admin: AdminUser,
    note: Annotated[str, Form(max_length=2000)] = "",
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Acknowledge an anomaly, as POST /api/v1/admin/anomalies/{id}/acknowledge (admin)."""
    kept = dict(parse_qsl(back_query(back, ("page",))))
    number = page_number(int(kept["page"])) if kept.get("page", "").isdigit() else 1
    try:
        await anomalies_service.acknowledge_anomaly(
            session,
            anomaly_id=anomaly_id,
            actor_id=admin.id,
            note=" ".join(note.split()) or None,
            metadata=event_metadata(request, admin),
        )
    except DomainError as exc:
        await session.rollback()
        return await _page(
            request, session, page=number, error=exc.detail, status_code=exc.status_code
        )
    return RedirectResponse(
        "/admin/anomalies" if number == 1 else f"/admin/anomalies?page={number}", status_code=303
    )
