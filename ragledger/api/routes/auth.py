"""Login and logout (ours: rate limits and events), plus fastapi-users' reset and verify."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.api.app_services import app_services
from ragledger.api.deps import CurrentUser, SessionDep, TokensDep, current_claims
from ragledger.api.errors import error_responses
from ragledger.api.rate_limits import RateScope
from ragledger.api.request_context import client_ip, event_metadata
from ragledger.events import store
from ragledger.events.access import (
    LoginFailed,
    LoginSucceeded,
    UserLoggedOut,
    user_stream,
)
from ragledger.models.users import User
from ragledger.schemas.users import AccessTokenPublic
from ragledger.services import users as users_service
from ragledger.services.security_events import record_security_event
from ragledger.services.tokens import TokenClaims, TokenService

router = APIRouter(prefix="/auth/jwt", tags=["auth"])

BAD_CREDENTIALS = "incorrect email or password"
# Hashed when the email is unknown, so that both failures cost one argon2 run.
_DUMMY_HASH = users_service.password_helper.hash("timing-equaliser-not-a-password")


@router.post(
    "/login",
    response_model=AccessTokenPublic,
    responses=error_responses(
        413, 422, 429, described={400: "Incorrect email or password, or an unparsable form"}
    ),
)
async def login(
    request: Request,
    session: SessionDep,
    tokens: TokensDep,
    credentials: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> AccessTokenPublic | JSONResponse:
    """Exchange email and password for a bearer token (public)."""
    token = await sign_in(
        request, session, tokens, email=credentials.username, password=credentials.password
    )
    if token is None:
        return JSONResponse({"detail": BAD_CREDENTIALS}, status_code=status.HTTP_400_BAD_REQUEST)
    return AccessTokenPublic(access_token=token, expires_in=tokens.lifetime_s)


async def sign_in(
    request: Request, session: AsyncSession, tokens: TokenService, *, email: str, password: str
) -> str | None:
    """A new token for these credentials, or None (the failure is recorded).

    Rate limits raise RateLimitExceededError. Shared by the API's login and the
    console's sign-in page, so both count, lock out and record alike.
    """
    email = email.strip()
    # The ledger cannot hold NUL (no account's email has one: get_by_email finds none);
    # the attempt is counted and recorded with U+FFFD in its place.
    storable_email = email.replace("\x00", "\ufffd")
    limits = app_services(request.app).rate_limits
    await limits.enforce(request, RateScope.LOGIN_ADDRESS, client_ip(request))
    await limits.enforce(request, RateScope.LOGIN_ACCOUNT, storable_email.casefold())

    user = await users_service.get_by_email(session, email) if email else None
    if user is None:
        await users_service.verify_password(password, _DUMMY_HASH)
        reason = "unknown_email"
    else:
        verified, new_hash = await users_service.verify_password(password, user.hashed_password)
        if not verified:
            reason = "wrong_password"
        elif not user.is_active:
            reason = "deactivated"
        else:
            reason = ""
            if new_hash is not None:
                user.hashed_password = new_hash
    if reason:
        await record_security_event(
            app_services(request.app).database.sessionmaker,
            LoginFailed(
                email=storable_email[:320], reason=reason, user_id=user.id if user else None
            ),
            event_metadata(request),
        )
        return None

    assert user is not None
    token, claims = tokens.issue(user.id)
    await store.append(
        session,
        user_stream(user.id),
        [LoginSucceeded(user_id=user.id, token_id=claims.token_id)],
        metadata=event_metadata(request, user),
    )
    return token


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401))
async def logout(
    request: Request,
    session: SessionDep,
    tokens: TokensDep,
    user: CurrentUser,
    claims: Annotated[TokenClaims, Depends(current_claims)],
) -> Response:
    """Revoke the token used for this request (any signed-in user)."""
    await sign_out(request, session, tokens, user, claims)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def sign_out(
    request: Request,
    session: AsyncSession,
    tokens: TokenService,
    user: User,
    claims: TokenClaims,
) -> None:
    """Revoke this token and record the logout (the API's and the console's)."""
    # In the transaction of the UserLoggedOut event: both are recorded, or neither.
    await tokens.revoke(session, claims)
    await store.append(
        session,
        user_stream(user.id),
        [UserLoggedOut(user_id=user.id, token_id=claims.token_id)],
        metadata=event_metadata(request, user),
    )
