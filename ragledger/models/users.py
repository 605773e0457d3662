"""The users table: the fastapi-users store plus role and groups."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID
from sqlalchemy import DateTime, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from ragledger.models.base import Base


class Role(StrEnum):
    """What a user may do; see ARCHITECTURE.md, "Roles"."""

    EMPLOYEE = "employee"
    AUDITOR = "auditor"
    ADMIN = "admin"


class User(SQLAlchemyBaseUserTableUUID, Base):
    """An account. Every change to a row is also an event in the user's stream."""

    __tablename__ = "users"

    role: Mapped[str] = mapped_column(Text, default=Role.EMPLOYEE.value)
    groups: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # Tokens issued before this moment are refused: set by a password reset and by a
    # deactivation, so neither leaves an old session working (nor revives one later).
    tokens_valid_after: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, default=None
    )


class RevokedTokenRow(Base):
    """A logged-out token, refused until it expires; written with its UserLoggedOut."""

    __tablename__ = "revoked_tokens"

    token_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# fastapi-users declares id, email and is_active as plain values to type checkers, so an
# SQL expression on `User.email` reads as a bool or a str. The table's columns are the
# same columns, typed as SQL expressions: queries use these.
USER_COLUMNS = User.__table__.c
