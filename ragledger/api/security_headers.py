"""Browser-facing hardening: security response headers and a credentials-safe CORS policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragledger.api.client_address import TrustedProxies

# An API response is data, never a document: it may load nothing and be framed nowhere,
# so a response that a browser is tricked into rendering cannot run anything.
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
# FastAPI's /docs and /redoc pages are HTML with an inline script that loads Swagger UI
# (or ReDoc, which also starts web workers from blob: URLs and fetches fonts) from a
# CDN. A CSP that allows all that would need 'unsafe-inline' scripts and so protect
# little, and one that forgets a source breaks the page in a way no test here can see.
# So those exact paths get no script policy, only the anti-framing directive.
DOCS_CSP = "frame-ancestors 'none'"
# The console's pages: scripts, styles and fetches from our own origin only, as files
# (no inline script or style, no eval), forms posting only to us, nothing framing them.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Two years, the value hstspreload.org asks for; `preload` is left to operators since
# it is a commitment for every subdomain that is hard to take back.
HSTS_VALUE = "max-age=63072000; includeSubDomains"
DEFAULT_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")

_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_CSP = b"content-security-policy"
_HSTS = b"strict-transport-security"
_CACHE_CONTROL = b"cache-control"
NO_STORE = b"no-store"
# Every API response is data for one caller (an error names the caller's problem, a
# public one may follow a signed-in one on a shared cache key); other paths are
# covered whenever the request carries credentials.
API_PREFIX = "/api/"
_CREDENTIALS = (b"authorization", b"cookie")


class SecurityHeadersMiddleware:
    """Add nosniff, anti-framing, referrer, opener, CSP and (over https) HSTS headers.

    A header the route already set is left as it is, except Cache-Control: every API
    response and every response to a request with credentials (Authorization or a
    cookie) gets `no-store`, replacing a weaker value, so that neither a browser nor a
    proxy keeps one user's data on disk or serves it to the next. HSTS is sent only when
    the request came over https, directly or per X-Forwarded-Proto from a trusted proxy.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        docs_paths: Iterable[str | None] = DEFAULT_DOCS_PATHS,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.app = app
        self.docs_paths = frozenset(path for path in docs_paths if path)
        self.trusted_proxies = trusted_proxies or TrustedProxies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app_path = _app_path(scope)
        is_docs_path = app_path in self.docs_paths
        https = self.trusted_proxies.scheme(scope) == "https"
        private = app_path.startswith(API_PREFIX) or any(
            name.lower() in _CREDENTIALS for name, _ in scope.get("headers", ())
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in _ALWAYS:
                    if name not in present:
                        headers.append((name, value))
                if _CSP not in present:
                    headers.append((_CSP, _csp_for(headers, is_docs_path=is_docs_path).encode()))
                if https and _HSTS not in present:
                    headers.append((_HSTS, HSTS_VALUE.encode()))
                if private:
                    headers = _no_store(headers)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _no_store(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = [(n, v) for n, v in headers if n.lower() != _CACHE_CONTROL]
    current = [v for n, v in headers if n.lower() == _CACHE_CONTROL]
    if any(NO_STORE in v.lower() for v in current):
        return headers
    return [*kept, (_CACHE_CONTROL, NO_STORE)]


def docs_paths_of(app: FastAPI) -> tuple[str, ...]:
    """The paths of the app's interactive docs pages (those that are enabled)."""
    candidates = (app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url)
    return tuple(path for path in candidates if path)


def add_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Allow the listed origins cross-origin, with credentials; none listed: no CORS at all.

    Call it after adding the other middleware so that CORS is the outermost layer and
    413s, 429s and errors answered by inner layers still carry the CORS headers a
    browser needs to let the page read them.
    """
    allowed = [_checked_origin(origin) for origin in origins]
    if not allowed:
        # Same-origin only: with no CORS headers a browser refuses cross-origin reads.
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
        # Ten minutes: Chromium's cap for cached preflights.
        max_age=600,
    )


def _checked_origin(origin: str) -> str:
    text = origin.strip()
    if text == "*":
        raise ValueError(
            "CORS origin '*' is not allowed: origins are allowed with credentials, and "
            "a wildcard with credentials would let any site act as the logged-in user; "
            "list each origin (e.g. https://app.example.com)"
        )
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or "*" in text
    ):
        # A browser sends the Origin as scheme://host[:port] exactly; anything else
        # (a trailing slash, a path, a pattern) would silently never match.
        raise ValueError(
            f"invalid CORS origin {origin!r}: expected scheme://host[:port] with no path, "
            "e.g. https://app.example.com"
        )
    # Scheme and host are case-insensitive and browsers send them in lower case.
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _app_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    # Under a root path (a proxy prefix or a mount) the docs live below it.
    if root_path and (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
        return path[len(root_path.rstrip("/")) :] or "/"
    return path


def _csp_for(headers: Sequence[tuple[bytes, bytes]], *, is_docs_path: bool) -> str:
    is_html = _content_type(headers).startswith("text/html")
    if is_docs_path and is_html:
        return DOCS_CSP
    if is_html:
        return CONSOLE_CSP
    # Everything else (JSON, event streams, errors, any download) gets the strict
    # policy: it only restricts what a rendered document may load, so data responses
    # lose nothing.
    return STRICT_CSP


def _content_type(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").strip().lower()
    return ""
