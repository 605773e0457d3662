"""Auditor pages: the answers list, one answer's story, and one document's history.

Each view runs the API's queries and records AuditViewed with the same view name and
filters as the API route, so the ledger cannot tell a console read from an API read
except by its request metadata.
"""

from __future__ import annotations

import uuid
from typing import Annotated, get_args

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ragledger.api.deps import AuditorUser, SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.services import users as users_service
from ragledger.services.audit.answer_pages import page_answers
from ragledger.services.audit.filters import AnswerFilters, AnswerStatus
from ragledger.services.audit.recorded_views import record_answer_view, record_view
from ragledger.services.audit.stories import document_history, question_story
from ragledger.services.errors import DomainError, InvalidInputError
from ragledger.web.forms import optional_time, optional_uuid
from ragledger.web.paging import PAGE_SIZE, Pager, page_number
from ragledger.web.rendering import render

router = APIRouter()
# Answers listed on a document's page, newest first; the answers list filtered by the
# document pages through the rest (a popular document has tens of thousands, and the
# page stays light: bench/console.py).
HISTORY_ANSWERS = 50
STATUSES: tuple[str, ...] = get_args(AnswerStatus)


@router.get("/audit/answers", response_class=HTMLResponse)
async def answers_page(
    request: Request,
    session: SessionDep,
    auditor: AuditorUser,
    asker: str = "",
    document: str = "",
    status: Annotated[list[str] | None, Query()] = None,
    without_citation: str = "",
    asked_from: str = "",
    asked_to: str = "",
    page: int = 1,
) -> HTMLResponse:
    """Every question with its outcome, filtered and paged (auditor, admin)."""
    form = {
        "asker": asker,
        "document": document,
        "status": [s for s in status or [] if s in STATUSES],
        "without_citation": without_citation,
        "asked_from": asked_from,
        "asked_to": asked_to,
    }
    number = page_number(page)
    try:
        asked_by = None
        if asker.strip():
            if "@" in asker:
                found_user = await users_service.get_by_email(session, asker.strip())
                if found_user is None:
                    raise InvalidInputError(f"no account has the email {asker.strip()!r}")
                asked_by = found_user.id
            else:
                asked_by = optional_uuid(asker, "Asker")
        filters = AnswerFilters.build(
            asked_by=asked_by,
            document_id=optional_uuid(document, "Document"),
            asked_from=optional_time(asked_from, "From"),
            asked_to=optional_time(asked_to, "To"),
            statuses=form["status"],  # type: ignore[arg-type]
            without_citation={"yes": True, "no": False}.get(without_citation),
        )
    except DomainError as exc:
        return render(
            request,
            "audit_answers.html",
            {"form": form, "statuses": STATUSES, "error": exc.detail, "rows": None},
            status_code=exc.status_code,
            title="Answers",
        )
    found = await page_answers(session, filters=filters, page=number, size=PAGE_SIZE)
    await record_view(
        session,
        auditor_id=auditor.id,
        view="answers",
        filters={**filters.record(), "page": (str(number),), "size": (str(PAGE_SIZE),)},
        item_count=len(found.items),
        metadata=event_metadata(request, auditor),
    )
    return render(
        request,
        "audit_answers.html",
        {
            "form": form,
            "statuses": STATUSES,
            "rows": found.items,
            "total": found.total,
            "pager": Pager(number, number > 1, number * PAGE_SIZE < found.total),
        },
        title="Answers",
    )


@router.get("/audit/answers/{question_id}", response_class=HTMLResponse)
async def story_page(
    request: Request, question_id: uuid.UUID, session: SessionDep, auditor: AuditorUser
) -> HTMLResponse:
    """One question's whole story from the ledger, and who read it (auditor, admin)."""
    story = await question_story(session, question_id, auditor_id=auditor.id)
    await record_answer_view(
        session,
        reader_id=auditor.id,
        answer_id=question_id,
        metadata=event_metadata(request, auditor),
    )
    return render(
        request, "audit_story.html", {"story": story, "p": story.provenance}, title="Answer story"
    )


@router.get("/audit/documents/{document_id}", response_class=HTMLResponse)
async def document_history_page(
    request: Request, document_id: uuid.UUID, session: SessionDep, auditor: AuditorUser
) -> HTMLResponse:
    """A document's versions, access changes, retraction and answers (auditor, admin)."""
    limit = HISTORY_ANSWERS
    history = await document_history(session, document_id, answers_limit=limit)
    await record_view(
        session,
        auditor_id=auditor.id,
        view="document_history",
        filters={"answers_limit": (str(limit),)},
        item_count=len(history.events) + len(history.answers),
        target_id=str(document_id),
        metadata=event_metadata(request, auditor),
    )
    return render(request, "audit_document.html", {"h": history}, title="Document history")
