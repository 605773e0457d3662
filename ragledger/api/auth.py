"""fastapi-users glue: the user database (flush, never commit), the manager, the backend."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi_users import BaseUserManager, FastAPIUsers, InvalidPasswordException, UUIDIDMixin
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.exceptions import InvalidResetPasswordToken, InvalidVerifyToken
from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase

from ragledger.api.app_services import app_services
from ragledger.api.deps import SessionDep
from ragledger.api.request_context import event_metadata
from ragledger.events import store
from ragledger.events.access import (
    PasswordReset,
    UserRegistered,
    UserVerificationRequested,
    UserVerified,
    user_stream,
)
from ragledger.models.users import User
from ragledger.services.errors import InvalidInputError
from ragledger.services.users import end_sessions, password_helper, validate_password

LOGIN_PATH = "/api/v1/auth/jwt/login"


class TransactionalUserDatabase(SQLAlchemyUserDatabase[User, uuid.UUID]):
    """fastapi-users' adapter, but flushing: the request's transaction commits the row
    together with its event, or neither."""

    async def create(self, create_dict: dict[str, Any]) -> User:
        """Insert without committing."""
        user = User(**create_dict)
        self.session.add(user)
        await self.session.flush()
        await self.session.refresh(user)
        return user

    async def update(self, user: User, update_dict: dict[str, Any]) -> User:
        """Update without committing."""
        for key, value in update_dict.items():
            setattr(user, key, value)
        self.session.add(user)
        await self.session.flush()
        await self.session.refresh(user)
        return user

    async def delete(self, user: User) -> None:
        """Accounts are deactivated, never deleted: their history stays in the ledger."""
        raise NotImplementedError("accounts are deactivated, not deleted")


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    """Password rules and the events behind fastapi-users' reset and verify flows."""

    def __init__(self, user_db: TransactionalUserDatabase, request: Request) -> None:
        super().__init__(user_db, password_helper)
        services = app_services(request.app)
        settings = services.settings
        secret = settings.resolved_secret_key()
        self.reset_password_token_secret = secret
        self.verification_token_secret = secret
        self._settings = settings
        self._mailer = services.mailer

    @property
    def session(self) -> Any:
        """The request's session."""
        return self.user_db.session  # type: ignore[attr-defined]

    async def validate_password(self, password: str, user: Any) -> None:
        """The platform's password rules."""
        try:
            validate_password(
                password, min_length=self._settings.password_min_length, email=user.email
            )
        except InvalidInputError as exc:
            raise InvalidPasswordException(reason=exc.detail) from None

    async def _record(self, request: Request | None, user: User, event: object) -> None:
        metadata = event_metadata(request, user) if request is not None else None
        await store.append(self.session, user_stream(user.id), [event], metadata=metadata)

    async def on_after_register(self, user: User, request: Request | None = None) -> None:
        """Self-registration (when allowed) is recorded like an admin's creation."""
        await self._record(
            request,
            user,
            UserRegistered(
                user_id=user.id,
                email=user.email,
                role=user.role,
                groups=tuple(user.groups or ()),
                registered_by=None,
                via="self",
            ),
        )

    async def on_after_reset_password(self, user: User, request: Request | None = None) -> None:
        """End the account's sessions and record the reset, in the reset's transaction."""
        # Whoever knew the old password may hold a token: it must not outlive the reset.
        end_sessions(user)
        await self.session.flush()
        await self._record(request, user, PasswordReset(user.id))

    async def on_after_request_verify(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        """Mail the verification token and record that it was sent."""
        await self._mailer.send(
            to=[user.email],
            subject="Verify your ragledger email address",
            body=(
                f"POST this token to {self._settings.public_base_url}/api/v1/auth/verify:"
                f"\n\n{token}"
            ),
            kind="email_verification",
        )
        await self._record(request, user, UserVerificationRequested(user.id))

    async def on_after_verify(self, user: User, request: Request | None = None) -> None:
        """Record the verification."""
        await self._record(request, user, UserVerified(user.id))

    # A token is ASCII; JSON may still carry a lone surrogate ("\ud800"), which the JWT
    # library cannot encode and which ended as a 500. It is simply not a valid token.
    async def verify(self, token: str, request: Request | None = None) -> User:
        """fastapi-users' verify, with a token that is not text refused as invalid."""
        if not _encodable(token):
            raise InvalidVerifyToken()
        return await super().verify(token, request)

    async def reset_password(
        self, token: str, password: str, request: Request | None = None
    ) -> User:
        """fastapi-users' reset, with a token that is not text refused as invalid."""
        if not _encodable(token):
            raise InvalidResetPasswordToken()
        return await super().reset_password(token, password, request)


def _encodable(token: str) -> bool:
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Plain functions, not generators: they own nothing to clean up, and a generator
# dependency of request scope may not sit on the function-scoped SessionDep.
async def get_user_db(session: SessionDep) -> TransactionalUserDatabase:
    """The user database on the request's session."""
    return TransactionalUserDatabase(session, User)


async def get_user_manager(
    request: Request, user_db: Annotated[TransactionalUserDatabase, Depends(get_user_db)]
) -> UserManager:
    """A manager bound to the request."""
    return UserManager(user_db, request)


def build_fastapi_users(secret: str, lifetime_s: int) -> FastAPIUsers[User, uuid.UUID]:
    """fastapi-users with the bearer JWT backend (used for its reset and verify routers)."""
    backend: AuthenticationBackend[User, uuid.UUID] = AuthenticationBackend(
        name="jwt",
        transport=BearerTransport(tokenUrl=LOGIN_PATH),
        get_strategy=lambda: JWTStrategy(secret=secret, lifetime_seconds=lifetime_s),
    )
    return FastAPIUsers[User, uuid.UUID](get_user_manager, [backend])
