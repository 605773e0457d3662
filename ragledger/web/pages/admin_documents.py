"""Admin documents: upload (the script posts to the API with progress), groups, retract."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from ragledger.api.app_services import app_services
from ragledger.api.deps import AdminUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.api.routes.documents import reader_of
from ragledger.models.documents import DocumentAccessRow, DocumentRow
from ragledger.services import documents as documents_service
from ragledger.services.errors import DomainError
from ragledger.web.paging import PAGE_SIZE, Pager, back_query, page_number
from ragledger.web.rendering import render

router = APIRouter()


async def _page(
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    number: int,
    *,
    error: str | None = None,
    status_code: int = 200,
    kept: dict[str, str] | None = None,
) -> HTMLResponse:
    query = documents_service.readable_documents(reader_of(admin), include_retracted=True)
    query = query.order_by(DocumentRow.created_at.desc(), DocumentRow.document_id)
    rows = list(await session.scalars(query.offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    # Groups and retraction as the commands wrote them (the catalog row is a projection
    # and may lag): the page shows what every read already honours.
    listed = [row.document_id for row in rows[:PAGE_SIZE]]
    access = (
        {
            a.document_id: a
            for a in await session.scalars(
                select(DocumentAccessRow).where(DocumentAccessRow.document_id.in_(listed))
            )
        }
        if listed
        else {}
    )
    return render(
        request,
        "admin_documents.html",
        {
            "rows": rows[:PAGE_SIZE],
            "access": access,
            "pager": Pager(number, number > 1, len(rows) > PAGE_SIZE),
            "error": error,
            "kept": kept or {},
            "max_upload_bytes": app_services(request.app).settings.max_upload_bytes,
            "current_query": f"page={number}",
        },
        status_code=status_code,
        title="Manage documents",
    )


@router.get("/admin/documents", response_class=HTMLResponse)
async def admin_documents_page(
    request: Request, session: SessionDep, admin: AdminUser, page: int = 1
) -> HTMLResponse:
    """Every document, retracted ones too, with upload, groups and retract (admin)."""
    return await _page(request, session, admin, page_number(page))


def _groups(text: str) -> list[str]:
    return [g.strip() for g in text.replace(";", ",").split(",") if g.strip()]


def _listed_page(back: str) -> int:
    """The page the form was sent from (its `back` query string), 1 if none."""
    kept = dict(parse_qsl(back_query(back, ("page",))))
    return page_number(int(kept["page"])) if kept.get("page", "").isdigit() else 1


def _back_to_list(back: str) -> RedirectResponse:
    """See the list again, at the page the form was sent from."""
    number = _listed_page(back)
    return RedirectResponse(
        "/admin/documents" if number == 1 else f"/admin/documents?page={number}", status_code=303
    )


@router.post("/admin/documents/{document_id}/groups", response_model=None)
async def change_groups(
    request: Request,
    document_id: uuid.UUID,
    session: SessionDep,
    admin: AdminUser,
    groups: Annotated[str, Form(max_length=2000)] = "",
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Change who may read a document, as PATCH /api/v1/documents/{id} (admin)."""
    try:
        await documents_service.change_access(
            session,
            document_id=document_id,
            access_groups=_groups(groups),
            actor_id=admin.id,
            metadata=event_metadata(request, admin),
        )
    except DomainError as exc:
        await session.rollback()
        return await _page(
            request,
            session,
            admin,
            _listed_page(back),
            error=exc.detail,
            status_code=exc.status_code,
            kept={str(document_id): groups},
        )
    return _back_to_list(back)


@router.post("/admin/documents/{document_id}/retract", response_model=None)
async def retract(
    request: Request,
    document_id: uuid.UUID,
    session: SessionDep,
    admin: AdminUser,
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Retract a document, as DELETE /api/v1/documents/{id} (admin)."""
    try:
        await documents_service.retract(
            session,
            document_id=document_id,
            actor_id=admin.id,
            metadata=event_metadata(request, admin),
        )
    except DomainError as exc:
        await session.rollback()
        return await _page(
            request,
            session,
            admin,
            _listed_page(back),
            error=exc.detail,
            status_code=exc.status_code,
        )
    return _back_to_list(back)
