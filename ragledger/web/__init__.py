"""The web console: server-rendered pages over the same services as the API.

Pages live in `web/pages/`, one module per area; they take the same dependencies as
the API routes (`api/deps.py`), so roles, groups, rate limits and recorded events are
enforced once. The session is the API's own token in a cookie (api/browser_session.py).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragledger.services.errors import DomainError
from ragledger.web.errors import (
    console_domain_error_handler,
    console_http_error_handler,
    console_validation_handler,
)
from ragledger.web.pages import (
    admin_documents,
    anomalies,
    ask,
    audit_answers,
    auth,
    documents,
    integrity,
    ledger,
    my_questions,
    status,
    users,
)

STATIC_DIR = Path(__file__).parent / "static"
PAGE_MODULES = (
    auth,
    ask,
    my_questions,
    documents,
    audit_answers,
    ledger,
    integrity,
    admin_documents,
    users,
    anomalies,
    status,
)


def install_console(app: FastAPI) -> None:
    """Serve the console at `/` and its assets at `/static` (kept out of the OpenAPI).

    Its error handlers replace the API's and hand API paths back to them unchanged.
    """
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in PAGE_MODULES:
        app.include_router(module.router, include_in_schema=False)
    app.add_exception_handler(DomainError, console_domain_error_handler)
    app.add_exception_handler(StarletteHTTPException, console_http_error_handler)
    app.add_exception_handler(RequestValidationError, console_validation_handler)
