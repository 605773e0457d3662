"""Admin documents: upload (the script posts to the API with progress), groups, retract."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ragledger.api.deps import AdminUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.api.routes.documents import reader_of
from ragledger.models.documents import DocumentRow
from ragledger.services import documents as documents_service
from ragledger.services.errors import DomainError
from ragledger.web.paging import PAGE_SIZE, Pager, page_number
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
    return render(
        request,
        "admin_documents.html",
        {
            "rows": rows[:PAGE_SIZE],
            "pager": Pager(number, number > 1, len(rows) > PAGE_SIZE),
            "error": error,
            "kept": kept or {},
            "max_upload_bytes": request.app.state.settings.max_upload_bytes,
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


@router.post("/admin/documents/{document_id}/groups", response_model=None)
async def change_groups(
    request: Request,
    document_id: uuid.UUID,
    session: SessionDep,
    admin: AdminUser,
    groups: Annotated[str, Form(max_length=2000)] = "",
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
            1,
            error=exc.detail,
            status_code=exc.status_code,
            kept={str(document_id): groups},
        )
    return RedirectResponse("/admin/documents", status_code=303)


@router.post("/admin/documents/{document_id}/retract", response_model=None)
async def retract(
    request: Request, document_id: uuid.UUID, session: SessionDep, admin: AdminUser
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
            request, session, admin, 1, error=exc.detail, status_code=exc.status_code
        )
    return RedirectResponse("/admin/documents", status_code=303)
