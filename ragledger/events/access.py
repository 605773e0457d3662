"""Access events: accounts, logins, denials, rate limits.

Personal data lives in fields named `email` (and nowhere else), so that it can be
crypto-shredded later.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ragledger.events.registry import event_type

SECURITY_STREAM = "security"
"""Stream of security signals that belong to no account (failed logins, denials)."""


def user_stream(user_id: UUID) -> str:
    """The stream of one account."""
    return f"user-{user_id}"


@event_type
@dataclass(frozen=True, slots=True)
class UserRegistered:
    """An account was created (by an admin, the CLI, or self-registration)."""

    user_id: UUID
    email: str
    role: str
    groups: tuple[str, ...]
    registered_by: UUID | None
    via: str


@event_type
@dataclass(frozen=True, slots=True)
class UserRoleChanged:
    """An admin changed an account's role."""

    user_id: UUID
    old_role: str
    new_role: str
    changed_by: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class UserGroupsChanged:
    """An admin changed the groups an account belongs to."""

    user_id: UUID
    old_groups: tuple[str, ...]
    new_groups: tuple[str, ...]
    changed_by: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class UserDeactivated:
    """An account was deactivated; its tokens stop working at once."""

    user_id: UUID
    deactivated_by: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class UserReactivated:
    """A deactivated account was made active again."""

    user_id: UUID
    reactivated_by: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class LoginSucceeded:
    """A user logged in and received a token (identified by `token_id`)."""

    user_id: UUID
    token_id: str


@event_type
@dataclass(frozen=True, slots=True)
class LoginFailed:
    """A login attempt failed; `email` is as given, the password is never recorded."""

    email: str
    reason: str
    user_id: UUID | None


@event_type
@dataclass(frozen=True, slots=True)
class UserLoggedOut:
    """A user logged out; the token is refused from now on."""

    user_id: UUID
    token_id: str


@event_type
@dataclass(frozen=True, slots=True)
class PasswordResetRequested:
    """A password reset mail was sent for an account."""

    user_id: UUID


@event_type
@dataclass(frozen=True, slots=True)
class PasswordReset:
    """An account's password was reset with a reset token."""

    user_id: UUID


@event_type
@dataclass(frozen=True, slots=True)
class UserVerificationRequested:
    """A verification mail was sent for an account."""

    user_id: UUID


@event_type
@dataclass(frozen=True, slots=True)
class UserVerified:
    """An account's email address was verified."""

    user_id: UUID


@event_type
@dataclass(frozen=True, slots=True)
class AccessDenied:
    """A request was refused: who (if known), which route, and why."""

    user_id: UUID | None
    method: str
    path: str
    reason: str
    status_code: int
    required_roles: tuple[str, ...] = ()
    # How many denials from the same source this event stands for: itself and those
    # held back since the last one recorded (services/security_events.py).
    count: int = 1


@event_type
@dataclass(frozen=True, slots=True)
class RateLimitExceeded:
    """A caller went over a rate limit; `email` is set for per-account login limits."""

    scope: str
    method: str
    path: str
    retry_after_s: int
    user_id: UUID | None = None
    email: str | None = None
    # How many refusals from the same source this event stands for (see AccessDenied).
    count: int = 1
