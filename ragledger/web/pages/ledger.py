"""The ledger browser: the API's event filters and signed cursors, and one event."""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ragledger.api.app_services import app_services
from ragledger.api.deps import AuditorUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.services.audit.event_pages import clamp_size, page_events
from ragledger.services.audit.filters import EventFilters
from ragledger.services.audit.recorded_views import record_view
from ragledger.services.errors import DomainError, NotFoundError
from ragledger.services.ledger_audit import export_line
from ragledger.web.forms import optional_int, optional_time, optional_uuid
from ragledger.web.rendering import render

router = APIRouter()
LEDGER_PAGE_SIZE = 50


@router.get("/audit/ledger", response_class=HTMLResponse)
async def ledger_page(
    request: Request,
    session: SessionDep,
    auditor: AuditorUser,
    event_type: str = "",
    actor: str = "",
    stream: str = "",
    document: str = "",
    recorded_from: str = "",
    recorded_to: str = "",
    from_position: str = "",
    to_position: str = "",
    order: Literal["newest", "oldest"] = "newest",
    cursor: str | None = None,
    size: int = LEDGER_PAGE_SIZE,
) -> HTMLResponse:
    """Ledger events, newest or oldest first, filtered, with cursor paging (auditor, admin)."""
    form = {
        "event_type": event_type,
        "actor": actor,
        "stream": stream,
        "document": document,
        "recorded_from": recorded_from,
        "recorded_to": recorded_to,
        "from_position": from_position,
        "to_position": to_position,
        "order": order,
    }
    size = clamp_size(size)
    try:
        filters = EventFilters.build(
            event_types=[t.strip() for t in event_type.split(",") if t.strip()],
            actor=actor.strip() or None,
            stream=stream.strip() or None,
            document_id=optional_uuid(document, "Document"),
            recorded_from=optional_time(recorded_from, "From"),
            recorded_to=optional_time(recorded_to, "To"),
            from_position=optional_int(from_position, "From position"),
            to_position=optional_int(to_position, "To position"),
        )
        page = await page_events(
            session,
            filters=filters,
            order=order,
            size=size,
            cursor=cursor or None,
            key=app_services(request.app).cursor_key,
        )
    except DomainError as exc:
        return render(
            request,
            "ledger.html",
            {"form": form, "error": exc.detail, "events": None},
            status_code=exc.status_code,
            title="Ledger",
        )
    await record_view(
        session,
        auditor_id=auditor.id,
        view="events",
        filters={
            **filters.record(),
            **page.record(),
            "order": (order,),
            "size": (str(size),),
        },
        item_count=len(page.items),
        metadata=event_metadata(request, auditor),
    )
    base = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "cursor" and v])
    return render(
        request,
        "ledger.html",
        {"form": form, "events": page.items, "page": page, "base_query": base},
        title="Ledger",
    )


@router.get("/audit/ledger/{position}", response_class=HTMLResponse)
async def event_page(
    request: Request,
    position: int,
    session: SessionDep,
    auditor: AuditorUser,
) -> HTMLResponse:
    """One event: its canonical JSON, hash and previous hash (auditor, admin)."""
    filters = EventFilters.build(from_position=position, to_position=position)
    page = await page_events(
        session,
        filters=filters,
        order="oldest",
        size=1,
        cursor=None,
        key=app_services(request.app).cursor_key,
    )
    if not page.items:
        raise NotFoundError(f"no event at position {position}")
    await record_view(
        session,
        auditor_id=auditor.id,
        view="events",
        filters={**filters.record(), "order": ("oldest",), "size": ("1",)},
        item_count=1,
        metadata=event_metadata(request, auditor),
    )
    event = page.items[0]
    canonical = json.dumps(json.loads(export_line(event)), indent=2, ensure_ascii=False)
    return render(
        request, "event.html", {"e": event, "canonical": canonical}, title=f"Event {position}"
    )
