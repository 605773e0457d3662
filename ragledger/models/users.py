"""The users table: the fastapi-users store plus role and groups."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID
from sqlalchemy import DateTime, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
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
