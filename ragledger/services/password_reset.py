"""The work behind forgot-password, done after the answer has been sent.

The route answers 202 at once, the same for every address, and hands the address to
`send_reset_mail`, which runs on its own: whether an account exists, the argon2
fingerprint (~130 ms) and the mail cost time that the answer must not reveal (it
did: ~430 ms for an account against ~26 ms for none).

At most one reset mail per account per PASSWORD_RESET_MAIL_INTERVAL_S, however often
it is asked for: the account's row is locked (so concurrent requests, in any process,
are serialized) and the ledger says when the last `PasswordResetRequested` was
recorded. The mail goes out before the event is appended, in the same transaction:
the event is only recorded for a mail that left.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import structlog
from fastapi_users.jwt import generate_jwt
from fastapi_users.manager import RESET_PASSWORD_TOKEN_AUDIENCE
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.access import PasswordResetRequested, user_stream
from ragledger.events.envelope import EventMetadata
from ragledger.models.ledger import EventRow
from ragledger.models.users import USER_COLUMNS, User
from ragledger.services.mail import Mailer
from ragledger.services.users import hash_password

log = structlog.get_logger(__name__)

# fastapi-users' reset route checks tokens for this audience and lifetime.
RESET_TOKEN_LIFETIME_S = 3600

type ResetOutcome = Literal["sent", "no_account", "inactive", "recently_sent"]


async def reset_token(user: User, *, secret: str) -> str:
    """A reset token with the claims fastapi-users' reset_password checks.

    `password_fgpt` ties it to the current password hash, so it stops working once
    the password is changed; the fingerprint is argon2, computed off the event loop.
    """
    return generate_jwt(
        {
            "sub": str(user.id),
            "password_fgpt": await hash_password(user.hashed_password),
            "aud": RESET_PASSWORD_TOKEN_AUDIENCE,
        },
        secret,
        RESET_TOKEN_LIFETIME_S,
    )


async def _mailed_recently(session: AsyncSession, user: User, interval_s: int) -> bool:
    last = await session.scalar(
        select(func.max(EventRow.recorded_at)).where(
            EventRow.stream_id == user_stream(user.id),
            EventRow.event_type == "PasswordResetRequested",
        )
    )
    if last is None:
        return False
    now = (await session.execute(select(func.now()))).scalar_one()
    return now - last < timedelta(seconds=interval_s)


async def send_reset_mail(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    mailer: Mailer,
    settings: Settings,
    email: str,
    metadata: EventMetadata,
) -> ResetOutcome:
    """Mail a reset token to the account with `email`, unless there is none, it is
    deactivated, or one was mailed within the interval; record the mail that left."""
    async with sessionmaker() as session, session.begin():
        user = await session.scalar(
            select(User).where(func.lower(USER_COLUMNS.email) == email.lower()).with_for_update()
        )
        if user is None:
            outcome: ResetOutcome = "no_account"
        elif not user.is_active:
            outcome = "inactive"
        elif await _mailed_recently(session, user, settings.password_reset_mail_interval_s):
            outcome = "recently_sent"
        else:
            token = await reset_token(user, secret=settings.resolved_secret_key())
            await mailer.send(
                to=[user.email],
                subject="Reset your ragledger password",
                body=(
                    "Someone asked to reset the password of this account. If it was you, "
                    f"POST this token to {settings.public_base_url}"
                    f"/api/v1/auth/reset-password:\n\n{token}\n\nOtherwise, ignore this mail."
                ),
                kind="password_reset",
            )
            await store.append(
                session, user_stream(user.id), [PasswordResetRequested(user.id)], metadata=metadata
            )
            outcome = "sent"
    # The outcome is logged without the address: logs cannot be crypto-shredded.
    log.info("password_reset_handled", outcome=outcome)
    return outcome
