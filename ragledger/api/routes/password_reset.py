"""forgot-password: rate-limited, answered at once, the same for every address."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ragledger.api.app_services import app_services
from ragledger.api.errors import BODY_ERRORS, error_responses
from ragledger.api.rate_limits import RateScope
from ragledger.api.request_context import client_ip, event_metadata
from ragledger.schemas.users import ForgotPasswordCreate
from ragledger.services.password_reset import send_reset_mail

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/forgot-password",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(*BODY_ERRORS, described={429: "Too many reset requests"}),
)
async def forgot_password(request: Request, body: ForgotPasswordCreate) -> None:
    """Mail a reset token if an active account has this address (public)."""
    # The answer is JSON `null` (no return value), as fastapi-users' own route gave.
    email = str(body.email)
    services = app_services(request.app)
    limits = services.rate_limits
    await limits.enforce(request, RateScope.RESET_REQUEST_ADDRESS, client_ip(request))
    await limits.enforce(request, RateScope.RESET_REQUEST_ACCOUNT, email.casefold())
    # Answered before anything depends on the address: the lookup, the argon2
    # fingerprint and the mail happen afterwards, so no timing tells accounts apart.
    services.background.spawn(
        send_reset_mail(
            sessionmaker=services.database.sessionmaker,
            mailer=services.mailer,
            settings=services.settings,
            email=email,
            metadata=event_metadata(request),
        ),
        name="password-reset-mail",
    )
