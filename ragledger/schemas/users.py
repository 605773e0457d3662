"""HTTP shapes of accounts and tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi_users import schemas
from pydantic import BaseModel, ConfigDict, EmailStr, Field, SecretStr, StringConstraints

from ragledger.models.users import Role

# Names are checked (after lower-casing) by services.users.normalize_groups.
GroupName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=320)]


class UserPublic(BaseModel):
    """An account as admins and its owner see it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: Role
    groups: list[str]
    is_active: bool
    is_verified: bool
    created_at: datetime


class ForgotPasswordCreate(BaseModel):
    """Ask for a reset mail (the body fastapi-users' own route took)."""

    # EmailStr (email-validator) bounds the length and refuses control characters.
    email: EmailStr


class UserCreate(BaseModel):
    """An admin creates an account."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    password: SecretStr = Field(min_length=1, max_length=1024)
    role: Role = Role.EMPLOYEE
    groups: list[GroupName] = Field(default_factory=list, max_length=100)


class UserUpdate(BaseModel):
    """An admin changes role, groups or active state; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    groups: list[GroupName] | None = Field(default=None, max_length=100)
    is_active: bool | None = None


class GroupPublic(BaseModel):
    """A group in use and its number of active members."""

    name: str
    members: int


class AccessTokenPublic(BaseModel):
    """A bearer token."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_in: int


class FastAPIUsersRead(schemas.BaseUser[uuid.UUID]):
    """What fastapi-users' own routers (verify, register) return."""

    role: Role
    groups: list[str]


class FastAPIUsersCreate(schemas.BaseUserCreate):
    """Self-registration input (only when ALLOW_REGISTRATION is on): no role choice."""

    model_config = ConfigDict(extra="forbid")
