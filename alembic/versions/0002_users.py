"""Users: the fastapi-users store with role and groups.

Revision ID: 0002_users
Revises: 0001_ledger
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_users"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id uuid NOT NULL,
            email varchar(320) NOT NULL,
            hashed_password varchar(1024) NOT NULL,
            is_active boolean NOT NULL DEFAULT true,
            is_superuser boolean NOT NULL DEFAULT false,
            is_verified boolean NOT NULL DEFAULT false,
            role text NOT NULL DEFAULT 'employee',
            groups text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_users PRIMARY KEY (id),
            CONSTRAINT ck_users_role CHECK (role IN ('employee', 'auditor', 'admin'))
        )
        """
    )
    # fastapi-users looks emails up case-insensitively; uniqueness must agree.
    op.execute("CREATE UNIQUE INDEX uq_users_email_lower ON users (lower(email))")
    op.execute("CREATE INDEX ix_users_groups ON users USING gin (groups)")
    # Default privileges from 0001 already grant the app role DML on new tables.


def downgrade() -> None:
    op.execute("DROP TABLE users")
