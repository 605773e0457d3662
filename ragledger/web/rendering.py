"""Jinja2 rendering with what every page's layout needs (user, CSRF token, navigation)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from ragledger.api.app_services import app_services
from ragledger.api.browser_session import Viewer, csrf_token_for
from ragledger.web.paging import query_prefix

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

# (path, label, roles that see the link)
NAVIGATION: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("/", "Ask", frozenset({"employee", "auditor", "admin"})),
    ("/my/questions", "My questions", frozenset({"employee", "auditor", "admin"})),
    ("/documents", "Documents", frozenset({"employee", "auditor", "admin"})),
    ("/audit/answers", "Answers", frozenset({"auditor", "admin"})),
    ("/audit/ledger", "Ledger", frozenset({"auditor", "admin"})),
    ("/audit/integrity", "Integrity", frozenset({"auditor", "admin"})),
    ("/admin/documents", "Manage documents", frozenset({"admin"})),
    ("/admin/users", "Users", frozenset({"admin"})),
    ("/admin/anomalies", "Anomalies", frozenset({"admin"})),
    ("/admin/status", "Status", frozenset({"admin"})),
)


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session ('' when signed out)."""
    claims = getattr(request.state, "token_claims", None)
    if claims is None:
        return ""
    return csrf_token_for(claims, app_services(request.app).csrf_key)


def iso(moment: datetime | None) -> str:
    """A datetime as ISO 8601 in UTC (the browser rewrites it to its own zone)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def shown(moment: datetime | None) -> str:
    """A datetime as text before the browser's script localises it (UTC)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_CITATION = re.compile(r"\[(\d{1,3})\]")


def cite_links(answer: str | None, known: int) -> Markup:
    """The answer, escaped, with each [n] of a known passage a link to it on the page."""

    def link(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if 1 <= n <= known:
            return f'<a class="cite" href="#passage-{n}">[{n}]</a>'
        return match.group(0)

    # Safe: the answer is escaped first; only our own <a> tags are added.
    return Markup(_CITATION.sub(link, str(escape(answer or ""))))  # noqa: S704


TEMPLATES.env.filters["iso"] = iso
TEMPLATES.env.filters["cite_links"] = cite_links
TEMPLATES.env.filters["shown"] = shown


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    title: str = "",
) -> HTMLResponse:
    """A page rendered in the layout, with the session's user and CSRF token."""
    user: Viewer | None = getattr(request.state, "viewer", None)
    navigation = (
        [(path, label) for path, label, roles in NAVIGATION if user.role in roles] if user else []
    )
    values = {
        "user": user,
        "csrf_token": csrf_token(request),
        "navigation": navigation,
        "current_path": request.url.path,
        # What the page's paging links keep: its filters (pager.html).
        "query_prefix": query_prefix(request.query_params),
        "current_query": str(request.url.query),
        "title": title,
        **(context or {}),
    }
    response = TEMPLATES.TemplateResponse(request, template, values, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    # Under the API's no-referrer policy a browser sends "Origin: null" with the page's
    # own POSTs and fetches; same-origin keeps the real Origin for the CSRF check and
    # still sends nothing to other sites.
    response.headers["Referrer-Policy"] = "same-origin"
    return response
