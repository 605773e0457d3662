"""Refusals on console pages: the API's handler records them, the page shows them.

The API's handler runs first (it records AccessDenied exactly as for an API call);
then a console page gets a redirect to sign in (401) or an HTML page with the same
message (403, 404, ...), while API paths keep their JSON answer.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from ragledger.api.browser_session import clear_session_cookie
from ragledger.api.errors import domain_error_handler
from ragledger.services.errors import AuthenticationError, DomainError

_NOT_CONSOLE = ("/api/", "/metrics", "/docs", "/redoc", "/openapi.json", "/static/")


def is_console_path(path: str) -> bool:
    """True for the console's pages (everything but the API, docs, metrics and assets)."""
    return not path.startswith(_NOT_CONSOLE)


async def console_domain_error_handler(request: Request, exc: Exception) -> Response:
    """The API's answer for API paths; for pages, a sign-in redirect or an error page."""
    api_response = await domain_error_handler(request, exc)
    if not is_console_path(request.url.path):
        return api_response
    assert isinstance(exc, DomainError)
    if isinstance(exc, AuthenticationError):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        redirect = RedirectResponse(f"/sign-in?next={quote(target, safe='')}", status_code=303)
        if exc.reason != "no_token":
            clear_session_cookie(request, redirect)
        return redirect
    from ragledger.web.rendering import render

    return render(
        request,
        "error.html",
        {"status_code": exc.status_code, "detail": exc.detail},
        status_code=exc.status_code,
        title="Not allowed" if exc.status_code == 403 else "Something went wrong",
    )
