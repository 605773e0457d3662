"""Sign-in and sign-out: the API's login and logout, with the token kept in a cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ragledger.api.browser_session import check_origin, clear_session_cookie, set_session_cookie
from ragledger.api.deps import CurrentUser, SessionDep, TokensDep, current_claims
from ragledger.api.rate_limits import RateLimitExceededError
from ragledger.api.routes.auth import BAD_CREDENTIALS, sign_in, sign_out
from ragledger.services.tokens import TokenClaims
from ragledger.web.rendering import render

router = APIRouter()


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form (public)."""
    return render(request, "sign_in.html", {"next": safe_next(next), "email": ""}, title="Sign in")


@router.post("/sign-in", response_model=None)
async def sign_in_submit(
    request: Request,
    session: SessionDep,
    tokens: TokensDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the credentials like the API's login; on success set the session cookie."""
    # No session yet, so no CSRF token: a cross-site sign-in is refused by its origin.
    check_origin(request)
    values = {"next": safe_next(next), "email": email}
    try:
        token = await sign_in(request, session, tokens, email=email, password=password)
    except RateLimitExceededError as exc:
        values["error"] = f"Too many sign-in attempts. Try again in {exc.retry_after_s} seconds."
        response = render(request, "sign_in.html", values, status_code=429, title="Sign in")
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if token is None:
        values["error"] = BAD_CREDENTIALS.capitalize() + "."
        return render(request, "sign_in.html", values, status_code=400, title="Sign in")
    redirect = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(request, redirect, token, tokens.lifetime_s)
    return redirect


@router.post("/sign-out")
async def sign_out_submit(
    request: Request,
    session: SessionDep,
    tokens: TokensDep,
    user: CurrentUser,
    claims: Annotated[TokenClaims, Depends(current_claims)],
) -> RedirectResponse:
    """Revoke the session's token, like the API's logout, and drop the cookie."""
    await sign_out(request, session, tokens, user, claims)
    redirect = RedirectResponse("/sign-in", status_code=303)
    clear_session_cookie(request, redirect)
    return redirect
