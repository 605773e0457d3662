"""The browser's session: the API's token in a cookie, guarded against cross-site requests.

The console keeps the same JWT the API issues in an HttpOnly, SameSite=Strict cookie;
`deps.current_claims` reads it when a request has no bearer token, so revocation,
expiry and deactivation apply exactly as for bearer tokens. A request that changes
state with the cookie must come from our own origin (Origin, else Referer) and carry
the session's CSRF token (a header, or a form field): an HMAC of the token's id, so it
dies with the session and cannot be forged without the secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response
from starlette.datastructures import FormData

from ragledger.api.app_services import app_services
from ragledger.services.errors import PermissionDeniedError
from ragledger.services.tokens import TokenClaims

SESSION_COOKIE = "ragledger_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who the request is signed in as, kept apart from the ORM row for rendering."""

    id: uuid.UUID
    email: str
    role: str


def csrf_key(secret: str) -> bytes:
    """The key CSRF tokens are made with, derived from the app's secret key."""
    return hashlib.sha256(f"ragledger-csrf:{secret}".encode()).digest()


def csrf_token_for(claims: TokenClaims, key: bytes) -> str:
    """The CSRF token of the session whose token has these claims."""
    return hmac.new(key, claims.token_id.encode(), hashlib.sha256).hexdigest()


def request_is_https(request: Request) -> bool:
    """True when the request came over https, directly or via a trusted proxy."""
    return app_services(request.app).trusted_proxies.scheme(request.scope) == "https"


def own_origins(request: Request) -> set[str]:
    """The origins this server answers as: the request's own, and PUBLIC_BASE_URL's."""
    scheme = "https" if request_is_https(request) else "http"
    origins = set()
    host = request.headers.get("host")
    if host:
        origins.add(f"{scheme}://{host.lower()}")
    public = urlsplit(app_services(request.app).settings.public_base_url)
    if public.scheme and public.netloc:
        origins.add(f"{public.scheme.lower()}://{public.netloc.lower()}")
    return origins


def _origin_of(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin.lower()
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    return None


def check_origin(request: Request, user_id: uuid.UUID | None = None) -> None:
    """Refuse (403) a state-changing request that does not come from our own origin."""
    origin = _origin_of(request)
    if origin is None or origin not in own_origins(request):
        raise PermissionDeniedError(
            "this request did not come from the console's own page",
            reason="csrf_origin",
            user_id=user_id,
        )


async def check_csrf(request: Request, claims: TokenClaims) -> None:
    """Refuse (403) a cookie-authenticated state change from elsewhere or without its token."""
    check_origin(request, claims.user_id)
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if not sent and content_type.startswith(_FORM_TYPES):
        # Starlette keeps the parsed form: the route's own Form parameters reuse it.
        form: FormData = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = csrf_token_for(claims, app_services(request.app).csrf_key)
    if not sent or not hmac.compare_digest(sent, expected):
        raise PermissionDeniedError(
            "the form's security token is missing or stale; reload the page and try again",
            reason="csrf_token",
            user_id=claims.user_id,
        )


def set_session_cookie(request: Request, response: Response, token: str, max_age_s: int) -> None:
    """Put the token in the session cookie (Secure when the request came over https)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request_is_https(request),
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request_is_https(request),
    )
