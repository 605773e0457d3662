"""My questions: the employee's own questions, newest first, paged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ragledger.api.deps import EmployeeUser, SessionDep
from ragledger.services.audit.answer_pages import page_answers
from ragledger.services.audit.filters import AnswerFilters
from ragledger.web.paging import PAGE_SIZE, Pager, page_number
from ragledger.web.rendering import render

router = APIRouter()


@router.get("/my/questions", response_class=HTMLResponse)
async def my_questions(
    request: Request, session: SessionDep, user: EmployeeUser, page: int = 1
) -> HTMLResponse:
    """The signed-in user's questions with their outcome (never anyone else's)."""
    number = page_number(page)
    found = await page_answers(
        session, filters=AnswerFilters.build(asked_by=user.id), page=number, size=PAGE_SIZE
    )
    pager = Pager(number, number > 1, number * PAGE_SIZE < found.total)
    return render(
        request,
        "my_questions.html",
        {"rows": found.items, "total": found.total, "pager": pager},
        title="My questions",
    )
