"""Documents an employee may read, and one document with its versions."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ragledger.api.deps import EmployeeUser, SessionDep
from ragledger.api.routes.documents import reader_of
from ragledger.models.documents import DocumentRow
from ragledger.services import documents as documents_service
from ragledger.web.paging import PAGE_SIZE, Pager, page_number
from ragledger.web.rendering import render

router = APIRouter()


@router.get("/documents", response_class=HTMLResponse)
async def documents_page(
    request: Request, session: SessionDep, user: EmployeeUser, page: int = 1
) -> HTMLResponse:
    """The documents the user may read (the API's query and access filter), newest first."""
    number = page_number(page)
    query = documents_service.readable_documents(reader_of(user)).order_by(
        DocumentRow.created_at.desc(), DocumentRow.document_id
    )
    rows = list(await session.scalars(query.offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    pager = Pager(number, number > 1, len(rows) > PAGE_SIZE)
    return render(
        request,
        "documents.html",
        {"rows": rows[:PAGE_SIZE], "pager": pager},
        title="Documents",
    )


@router.get("/documents/{document_id}", response_class=HTMLResponse)
async def document_page(
    request: Request, document_id: uuid.UUID, session: SessionDep, user: EmployeeUser
) -> HTMLResponse:
    """One readable document with its versions; 404 as the API when not readable."""
    document, versions = await documents_service.get_document(session, document_id, reader_of(user))
    return render(
        request,
        "document.html",
        {"d": document, "versions": versions},
        title=document.title,
    )
