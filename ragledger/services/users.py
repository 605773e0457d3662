"""Accounts: create, change role and groups, deactivate; each change with its event.

The row change and its event commit in the caller's transaction (services flush, they
never commit). Rows are locked (SELECT ... FOR UPDATE) before a change, so two admins
changing one account produce events whose old values are the true previous values.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi_users.password import PasswordHelper
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.events import store
from ragledger.events.access import (
    UserDeactivated,
    UserGroupsChanged,
    UserReactivated,
    UserRegistered,
    UserRoleChanged,
    user_stream,
)
from ragledger.events.envelope import EventMetadata
from ragledger.models.users import USER_COLUMNS, Role, User
from ragledger.services.errors import ConflictError, InvalidInputError, NotFoundError

GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# Deliberately loose: one @, something on each side, no spaces or control characters.
EMAIL = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]{1,255}$")

password_helper = PasswordHelper()


# argon2 costs ~130 ms of CPU per hash or check on purpose. On the event loop that
# would stall every other request and every streamed answer of the process for as
# long; argon2-cffi releases the GIL, so a worker thread runs it beside the loop.


async def hash_password(password: str) -> str:
    """The argon2 hash of `password`, computed off the event loop."""
    return await asyncio.to_thread(password_helper.hash, password)


async def verify_password(password: str, hashed: str) -> tuple[bool, str | None]:
    """(matches, a new hash when the stored one's parameters are outdated), off the loop."""
    return await asyncio.to_thread(password_helper.verify_and_update, password, hashed)


@dataclass(frozen=True, slots=True)
class UserView:
    """An account as services return it."""

    id: uuid.UUID
    email: str
    role: str
    groups: tuple[str, ...]
    is_active: bool
    is_verified: bool
    created_at: datetime


def end_sessions(user: User) -> None:
    """Refuse every token issued to `user` until now (password reset, deactivation).

    The application's clock, as the tokens' `iat` is: hosts must keep their clocks in
    step (NTP), or a token issued just before on a host that runs behind survives.
    """
    user.tokens_valid_after = datetime.now(UTC)


def to_view(user: User) -> UserView:
    """The dataclass view of a row."""
    return UserView(
        id=user.id,
        email=user.email,
        role=user.role,
        groups=tuple(user.groups or ()),
        is_active=user.is_active,
        is_verified=user.is_verified,
        created_at=user.created_at,
    )


def normalize_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated, validated group names."""
    cleaned = sorted({g.strip().lower() for g in groups})
    bad = [g for g in cleaned if not GROUP_NAME.match(g)]
    if bad:
        raise InvalidInputError(
            f"invalid group names {bad}: use 1-64 of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return tuple(cleaned)


def validate_email(email: str) -> str:
    """The address, trimmed; InvalidInputError when it is not one."""
    email = email.strip()
    if not EMAIL.match(email):
        raise InvalidInputError("not a valid email address")
    return email


def validate_password(password: str, *, min_length: int, email: str) -> None:
    """Refuse short passwords and passwords that contain the email's local part."""
    if len(password) < min_length:
        raise InvalidInputError(f"password must be at least {min_length} characters")
    if len(password) > 1024:
        raise InvalidInputError("password must be at most 1024 characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may carry lone surrogates ("\ud800"); hashing needs UTF-8 (it was a 500).
        raise InvalidInputError("password must be valid Unicode text") from None
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in password.lower():
        raise InvalidInputError(
            "password must not contain the part of your email address before the @"
        )


def parse_role(role: str) -> Role:
    """The Role for a name; InvalidInputError otherwise."""
    try:
        return Role(role)
    except ValueError:
        raise InvalidInputError(
            f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}"
        ) from None


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    """The account with this email (case-insensitive); None for one no account can have."""
    if "\x00" in email:
        # PostgreSQL text cannot hold NUL, so no stored email has one, and the driver
        # refuses such a parameter outright (it was a 500 at login).
        return None
    user: User | None = await session.scalar(
        select(User).where(func.lower(USER_COLUMNS.email) == email.lower())
    )
    return user


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    role: str,
    groups: Sequence[str],
    password_min_length: int,
    actor_id: uuid.UUID | None,
    via: str,
    metadata: EventMetadata,
) -> UserView:
    """Create an account and record UserRegistered; ConflictError if the email is taken."""
    email = validate_email(email)
    validate_password(password, min_length=password_min_length, email=email)
    role_value = parse_role(role).value
    group_names = normalize_groups(groups)
    if await get_by_email(session, email) is not None:
        raise ConflictError("a user with this email already exists")
    hashed = await hash_password(password)  # slow on purpose; done before the append lock
    user = User(
        id=uuid.uuid4(),
        email=email,
        hashed_password=hashed,
        role=role_value,
        groups=list(group_names),
        is_active=True,
        is_verified=False,
        is_superuser=False,
    )
    session.add(user)
    await session.flush()
    await session.refresh(user)
    await store.append(
        session,
        user_stream(user.id),
        [
            UserRegistered(
                user_id=user.id,
                email=email,
                role=role_value,
                groups=group_names,
                registered_by=actor_id,
                via=via,
            )
        ],
        expected_version=store.NO_STREAM,
        metadata=metadata,
    )
    return to_view(user)


async def _locked(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.scalar(select(User).where(USER_COLUMNS.id == user_id).with_for_update())
    if user is None:
        raise NotFoundError("user not found")
    return user


async def _active_admins(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, USER_COLUMNS.is_active.is_(True))
        )
        or 0
    )


async def update_user(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    role: str | None = None,
    groups: Sequence[str] | None = None,
    is_active: bool | None = None,
    actor_id: uuid.UUID | None,
    metadata: EventMetadata,
) -> UserView:
    """Change role, groups and/or active state, appending one event per real change.

    The last active admin cannot be demoted or deactivated (ConflictError): nobody
    could manage accounts afterwards.
    """
    user = await _locked(session, user_id)
    events: list[object] = []
    if role is not None:
        new_role = parse_role(role).value
        if new_role != user.role:
            if (
                user.role == Role.ADMIN.value
                and user.is_active
                and await _active_admins(session) <= 1
            ):
                raise ConflictError("cannot demote the last active admin")
            events.append(UserRoleChanged(user.id, user.role, new_role, actor_id))
            user.role = new_role
    if groups is not None:
        new_groups = normalize_groups(groups)
        old_groups = tuple(user.groups or ())
        if new_groups != old_groups:
            events.append(UserGroupsChanged(user.id, old_groups, new_groups, actor_id))
            user.groups = list(new_groups)
    if is_active is not None and is_active != user.is_active:
        if not is_active:
            if user.role == Role.ADMIN.value and await _active_admins(session) <= 1:
                raise ConflictError("cannot deactivate the last active admin")
            events.append(UserDeactivated(user.id, actor_id))
            # Reactivating later must not revive the tokens the account had.
            end_sessions(user)
        else:
            events.append(UserReactivated(user.id, actor_id))
        user.is_active = is_active
    if events:
        await session.flush()
        await store.append(session, user_stream(user.id), events, metadata=metadata)
    await session.refresh(user)
    return to_view(user)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> UserView:
    """One account; NotFoundError if absent."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError("user not found")
    return to_view(user)


async def list_groups(session: AsyncSession) -> list[tuple[str, int]]:
    """Every group in use with its number of active members."""
    group = func.unnest(User.groups).label("group")
    rows = await session.execute(
        select(group, func.count())
        .where(USER_COLUMNS.is_active.is_(True))
        .group_by(group)
        .order_by(group)
    )
    return [(row[0], row[1]) for row in rows]


def accounts_query(
    *,
    role: str | None = None,
    group: str | None = None,
    active: bool | None = None,
    email: str | None = None,
) -> Select[tuple[User]]:
    """Accounts, oldest first, filtered; `email` is a case-insensitive substring."""
    query = select(User).order_by(User.created_at, USER_COLUMNS.id)
    if role is not None:
        query = query.where(User.role == role)
    if group is not None:
        query = query.where(USER_COLUMNS.groups.any(group.lower()))
    if active is not None:
        query = query.where(USER_COLUMNS.is_active.is_(active))
    if email:
        escaped = email.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(USER_COLUMNS.email).like(f"%{escaped}%", escape="\\"))
    return query
