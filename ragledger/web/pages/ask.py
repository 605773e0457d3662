"""Ask (the answer streams from the API's SSE route) and one answer with its passages."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ragledger.api.deps import EmployeeUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.api.routes.documents import reader_of
from ragledger.services.audit.recorded_views import record_answer_view
from ragledger.services.provenance import load_provenance
from ragledger.web.rendering import render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def ask_page(request: Request, user: EmployeeUser) -> HTMLResponse:
    """The question box; the script asks POST /api/v1/questions and shows the stream."""
    return render(request, "ask.html", title="Ask")


@router.get("/answers/{answer_id}", response_class=HTMLResponse)
async def answer_page(
    request: Request, answer_id: uuid.UUID, session: SessionDep, user: EmployeeUser
) -> HTMLResponse:
    """An answer with its numbered passages (the asker, auditors and admins), as the API."""
    provenance = await load_provenance(session, answer_id, reader_of(user))
    response = render(
        request,
        "answer.html",
        {"p": provenance, "is_asker": provenance.asked_by == user.id},
        title="Answer",
    )
    # An auditor or admin reading someone else's answer is recorded as the API records it.
    await record_answer_view(
        session,
        reader_id=user.id,
        answer_id=answer_id,
        asked_by=provenance.asked_by,
        metadata=event_metadata(request, user),
    )
    return response
