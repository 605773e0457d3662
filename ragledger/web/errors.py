"""Refusals and errors on console pages: the API records them, the page shows them.

The API's handler runs first (it records AccessDenied exactly as for an API call);
then a console page gets a redirect to sign in (401) or an HTML page with the same
message and status (403, 404, ...), while API paths keep their JSON answer. The same
goes for the framework's own errors: an unknown address (404, 405) and a parameter
that does not parse (a malformed id in the path is a page that does not exist, 404;
a bad query or form field is 422, named in the user's words).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragledger.api.browser_session import clear_session_cookie
from ragledger.api.errors import domain_error_handler, validation_handler
from ragledger.services.errors import AuthenticationError, DomainError

_NOT_CONSOLE = ("/api/", "/metrics", "/docs", "/redoc", "/openapi.json", "/static/")
# Titles of the error page by status; anything else is "Something went wrong".
_TITLES = {
    403: "Not allowed",
    404: "Page not found",
    405: "Not possible here",
    422: "Invalid input",
}
_HTTP_DETAILS = {
    404: "There is no page at this address.",
    405: "This page cannot be used that way.",
}


def is_console_path(path: str) -> bool:
    """True for the console's pages (everything but the API, docs, metrics and assets)."""
    return not path.startswith(_NOT_CONSOLE)


def error_page(
    request: Request, status_code: int, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """The console's error page with `detail`, answered with `status_code`."""
    from ragledger.web.rendering import render

    response = render(
        request,
        "error.html",
        {"status_code": status_code, "detail": detail},
        status_code=status_code,
        title=_TITLES.get(status_code, "Something went wrong"),
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


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
    return error_page(request, exc.status_code, exc.detail)


async def console_http_error_handler(request: Request, exc: Exception) -> Response:
    """The framework's HTTP errors (unknown address, wrong method): a page on the console."""
    assert isinstance(exc, StarletteHTTPException)
    if not is_console_path(request.url.path):
        return await http_exception_handler(request, exc)
    detail = _HTTP_DETAILS.get(exc.status_code) or str(exc.detail)
    return error_page(request, exc.status_code, detail, dict(exc.headers or {}))


def _field_errors(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors as one sentence: each field with what was wrong with it."""
    parts = []
    for error in errors:
        name = str(error["loc"][-1]) if error.get("loc") else "input"
        message = str(error.get("msg", "is invalid"))
        parts.append(f"{name.replace('_', ' ')}: {message[:1].lower()}{message[1:]}")
    return "; ".join(parts) + "."


async def console_validation_handler(request: Request, exc: Exception) -> Response:
    """Parameters that do not parse: the API's 400/422 JSON, or a page on the console."""
    if not is_console_path(request.url.path):
        return await validation_handler(request, exc)
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    in_path = [e for e in errors if e.get("loc") and e["loc"][0] == "path"]
    if in_path:
        # /documents/not-an-id names no page, exactly like an id that does not exist.
        return error_page(request, 404, _HTTP_DETAILS[404] + " The address holds no valid id.")
    return error_page(request, 422, "This page cannot use its input: " + _field_errors(errors))
