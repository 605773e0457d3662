"""Documents: upload (new or new version), retract, change access, list, read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi_pagination.ext.sqlalchemy import apaginate
from sqlalchemy import any_, literal

from ragledger.api.app_services import app_services
from ragledger.api.deps import NO_NUL, AdminUser, EmployeeUser, SessionDep, SettingsDep
from ragledger.api.errors import BODY_ERRORS, error_responses
from ragledger.api.rate_limits import RateScope
from ragledger.api.request_context import event_metadata
from ragledger.core.settings import Settings
from ragledger.models.documents import DocumentRow
from ragledger.schemas.documents import (
    DocumentAccepted,
    DocumentAccessPublic,
    DocumentAccessUpdate,
    DocumentDetail,
    DocumentPublic,
    DocumentVersionPublic,
)
from ragledger.schemas.pagination import Page
from ragledger.services import documents as documents_service
from ragledger.services.documents import PayloadTooLargeError, reader_of

router = APIRouter(prefix="/documents", tags=["documents"], responses=error_responses(401))

UPLOAD_ERRORS = {
    400: "A form that cannot be parsed",
    413: "The file is over MAX_UPLOAD_BYTES",
    415: "The content is not PDF, DOCX, HTML, Markdown or plain text",
    422: "A missing or empty file, a title too long",
    429: "Upload rate limit",
}


async def _read_capped(file: UploadFile, settings: Settings) -> bytes:
    # Read one byte past the limit: enough to know it is too large, never the whole file.
    content = await file.read(settings.max_upload_bytes + 1)
    if len(content) > settings.max_upload_bytes:
        raise PayloadTooLargeError(
            f"the file is larger than the limit of {settings.max_upload_bytes} bytes"
        )
    return content


@router.post(
    "",
    response_model=DocumentAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, described=UPLOAD_ERRORS),
)
async def upload_document(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    file: Annotated[UploadFile, File(description="PDF, DOCX, HTML, Markdown or text")],
    title: Annotated[str | None, Form(max_length=300)] = None,
    access_groups: Annotated[
        list[str] | None,
        Form(description="Repeat; none and not public: admins and auditors only"),
    ] = None,
    public: Annotated[bool, Form(description="Every signed-in user may read it")] = False,
) -> DocumentAccepted:
    """Upload a new document; it is ingested in the background (admin)."""
    await app_services(request.app).rate_limits.enforce(request, RateScope.UPLOAD, str(admin.id))
    content = await _read_capped(file, settings)
    accepted = await documents_service.upload(
        session,
        content=content,
        filename=file.filename,
        title=title,
        access_groups=access_groups or [],
        max_bytes=settings.max_upload_bytes,
        actor_id=admin.id,
        metadata=event_metadata(request, admin),
        public=public,
    )
    return DocumentAccepted.model_validate(accepted, from_attributes=True)


@router.post(
    "/{document_id}/versions",
    response_model=DocumentAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(
        403, 404, described={**UPLOAD_ERRORS, 409: "The document was retracted"}
    ),
)
async def upload_version(
    request: Request,
    document_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    file: Annotated[UploadFile, File()],
    title: Annotated[str | None, Form(max_length=300)] = None,
    access_groups: Annotated[list[str] | None, Form(description="Omit to keep")] = None,
    public: Annotated[bool | None, Form(description="Omit to keep")] = None,
) -> DocumentAccepted:
    """Upload a new version; the old one stops being retrieved (admin)."""
    await app_services(request.app).rate_limits.enforce(request, RateScope.UPLOAD, str(admin.id))
    content = await _read_capped(file, settings)
    accepted = await documents_service.upload(
        session,
        content=content,
        filename=file.filename,
        title=title,
        access_groups=access_groups,
        max_bytes=settings.max_upload_bytes,
        actor_id=admin.id,
        metadata=event_metadata(request, admin),
        document_id=document_id,
        public=public,
    )
    return DocumentAccepted.model_validate(accepted, from_attributes=True)


@router.delete(
    "/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404, 422, described={409: "Already retracted"}),
)
async def retract_document(
    request: Request, document_id: uuid.UUID, session: SessionDep, admin: AdminUser
) -> Response:
    """Retract a document: no longer listed or retrieved, kept in the ledger (admin)."""
    await documents_service.retract(
        session,
        document_id=document_id,
        actor_id=admin.id,
        metadata=event_metadata(request, admin),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch(
    "/{document_id}",
    response_model=DocumentAccessPublic,
    responses=error_responses(*BODY_ERRORS, 403, 404, described={409: "The document is retracted"}),
)
async def change_access(
    request: Request,
    document_id: uuid.UUID,
    body: DocumentAccessUpdate,
    session: SessionDep,
    admin: AdminUser,
) -> DocumentAccessPublic:
    """Change who may read a document: its groups, whether it is public (admin)."""
    state = await documents_service.change_access(
        session,
        document_id=document_id,
        access_groups=body.access_groups,
        public=body.public,
        actor_id=admin.id,
        metadata=event_metadata(request, admin),
    )
    return DocumentAccessPublic(
        document_id=document_id, access_groups=list(state.access_groups), public=state.public
    )


@router.get("", response_model=Page[DocumentPublic], responses=error_responses(422))
async def list_documents(
    session: SessionDep,
    user: EmployeeUser,
    status_filter: Annotated[
        Literal["pending", "indexed", "failed", "retracted"] | None, Query(alias="status")
    ] = None,
    group: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> Page[DocumentPublic]:
    """Documents you may read, newest first, filtered by status or group (employee and up)."""
    query = documents_service.readable_documents(
        reader_of(user), include_retracted=status_filter == "retracted"
    )
    # `indexed` means searchable: the chunks projection has applied DocumentIndexed.
    searchable = await documents_service.searchable_up_to(session)
    if status_filter is not None:
        query = query.where(documents_service.status_condition(status_filter, searchable))
    if group is not None:
        query = query.where(literal(group.lower()) == any_(DocumentRow.access_groups))
    query = query.order_by(DocumentRow.created_at.desc(), DocumentRow.document_id)

    def public(rows: Sequence[DocumentRow]) -> list[DocumentPublic]:
        return [_public(row, searchable) for row in rows]

    return await apaginate(session, query, transformer=public)


def _public(row: DocumentRow, searchable: int) -> DocumentPublic:
    status = documents_service.reported_status(row.status, row.indexed_position, searchable)
    return DocumentPublic.model_validate(row).model_copy(update={"status": status})


@router.get("/{document_id}", response_model=DocumentDetail, responses=error_responses(404, 422))
async def get_document(
    document_id: uuid.UUID, session: SessionDep, user: EmployeeUser
) -> DocumentDetail:
    """A document you may read, with its versions (employee and up)."""
    document, versions = await documents_service.get_document(session, document_id, reader_of(user))
    searchable = await documents_service.searchable_up_to(session)
    return DocumentDetail(
        **_public(document, searchable).model_dump(),
        versions=[
            DocumentVersionPublic.model_validate(v).model_copy(
                update={
                    "status": documents_service.reported_status(
                        v.status, v.indexed_position, searchable
                    )
                }
            )
            for v in versions
        ],
    )
