"""Pure ASGI middleware binding a request id to structlog's context and logging each request."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragledger.core import metrics

log = structlog.get_logger("ragledger.http")

REQUEST_ID_HEADER = b"x-request-id"


class RequestContextMiddleware:
    """Bind request_id (taken from X-Request-ID when sane, else new) and log in/out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        log.info("request_started", method=scope["method"], path=scope["path"])
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            log.info(
                "request_finished",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            labels = (scope["method"], _route_template(scope), str(status))
            metrics.http_requests.labels(*labels).inc()
            metrics.http_request_duration.labels(*labels).observe(elapsed)
            structlog.contextvars.clear_contextvars()


def _route_template(scope: Scope) -> str:
    """The path template the request matched (bounded label values), or "unmatched"."""
    app = scope.get("app")
    templates = getattr(getattr(app, "state", None), "route_templates", None)
    if templates is None and app is not None:
        templates = route_templates(app)
        app.state.route_templates = templates
    path = scope["path"]
    for pattern, template in templates or ():
        if pattern.fullmatch(path):
            return template
    return "unmatched"


def route_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """Every path template of the app, literal ones first, as (regex, template).

    Included routers keep their own relative paths on the route objects, so the full
    templates are taken from the OpenAPI schema, plus the few routes outside it.
    """
    paths = set(app.openapi()["paths"])
    paths.update(getattr(route, "path", "") for route in app.routes)
    paths.update(extra for extra in getattr(app.state, "unlisted_paths", ()))
    compiled = []
    for template in sorted(p for p in paths if p):
        regex = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        compiled.append((re.compile(regex), template))
    compiled.sort(key=lambda item: item[1].count("{"))
    return compiled


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_." for c in text):
                return text
    return None
