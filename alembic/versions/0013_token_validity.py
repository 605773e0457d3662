"""Tokens end with a password reset or a deactivation, and logouts outlive Redis.

`users.tokens_valid_after`: a token whose issue time (`iat`) is earlier is refused. A
password reset and a deactivation set it, so a session opened before either ends
with it, and reactivating an account does not revive the tokens it had.

`revoked_tokens`: one row per logged-out token, written in the logout's transaction
beside its `UserLoggedOut` event, and read by the same query that loads the token's
account. Revocation used to live in Redis only: a Redis restart without persistence
(or a FLUSHDB) made logged-out tokens work again. Rows are pruned once the token has
expired anyway.

Revision ID: 0013_token_validity
Revises: 0012_document_access
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_token_validity"
down_revision: str | None = "0012_document_access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz")
    op.execute(
        """
        CREATE TABLE revoked_tokens (
            token_id text NOT NULL,
            user_id uuid NOT NULL,
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_revoked_tokens PRIMARY KEY (token_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_revoked_tokens_expires_at ON revoked_tokens (expires_at)")
    # Default privileges from 0001 already grant the app role DML on new tables.


def downgrade() -> None:
    op.execute("DROP TABLE revoked_tokens")
    op.execute("ALTER TABLE users DROP COLUMN tokens_valid_after")
