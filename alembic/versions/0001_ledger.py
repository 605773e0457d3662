"""The ledger: events (append-only, hash-chained), blobs, subscriber checkpoints, streams.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "ragledger_app"


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    # The role the application runs as (SET ROLE on each connection). Creating it needs
    # CREATEROLE; where the migrator lacks it, a DBA creates the role beforehand.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            END IF;
            BEGIN
                EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
            EXCEPTION WHEN others THEN
                RAISE NOTICE 'could not grant {APP_ROLE} to %: %', current_user, SQLERRM;
            END;
        END
        $$
        """
    )

    op.execute(
        """
        CREATE TABLE events (
            position bigint NOT NULL,
            event_id uuid NOT NULL,
            stream_id text NOT NULL,
            stream_version integer NOT NULL,
            event_type text NOT NULL,
            schema_version smallint NOT NULL,
            payload jsonb NOT NULL,
            metadata jsonb NOT NULL,
            recorded_at timestamptz NOT NULL,
            prev_hash bytea NOT NULL,
            hash bytea NOT NULL,
            CONSTRAINT pk_events PRIMARY KEY (position),
            CONSTRAINT uq_events_event_id UNIQUE (event_id),
            CONSTRAINT uq_events_stream_id_stream_version UNIQUE (stream_id, stream_version),
            CONSTRAINT ck_events_position_positive CHECK (position > 0),
            CONSTRAINT ck_events_stream_version_positive CHECK (stream_version > 0),
            CONSTRAINT ck_events_hash_lengths
                CHECK (octet_length(hash) = 32 AND octet_length(prev_hash) = 32)
        )
        """
    )
    op.execute("CREATE INDEX ix_events_event_type_position ON events (event_type, position)")
    op.execute(
        """
        CREATE FUNCTION events_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the ledger is append-only: % on events is refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()"
    )

    op.execute(
        """
        CREATE TABLE blobs (
            sha256 varchar(64) NOT NULL,
            size bigint NOT NULL,
            content bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_blobs PRIMARY KEY (sha256),
            CONSTRAINT ck_blobs_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$')
        )
        """
    )
    op.execute(
        """
        CREATE TABLE subscriber_checkpoints (
            name text NOT NULL,
            position bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            last_error text,
            failing_position bigint,
            failures integer NOT NULL DEFAULT 0,
            CONSTRAINT pk_subscriber_checkpoints PRIMARY KEY (name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE stream_catalog (
            stream_id text NOT NULL,
            category text NOT NULL,
            version integer NOT NULL,
            event_count integer NOT NULL,
            first_position bigint NOT NULL,
            last_position bigint NOT NULL,
            last_event_type text NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            CONSTRAINT pk_stream_catalog PRIMARY KEY (stream_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_stream_catalog_category ON stream_catalog (category)")

    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    op.execute("REVOKE ALL ON events, blobs FROM PUBLIC")
    # The ledger and the blobs are immutable for the application.
    op.execute(f"GRANT SELECT, INSERT ON events, blobs TO {APP_ROLE}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON subscriber_checkpoints, stream_catalog "
        f"TO {APP_ROLE}"
    )
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")
    # Read models created by later migrations are the application's to rewrite.
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}"
    )


def downgrade() -> None:
    op.execute("DROP TABLE stream_catalog")
    op.execute("DROP TABLE subscriber_checkpoints")
    op.execute("DROP TABLE blobs")
    op.execute("DROP TRIGGER events_refuse_truncate ON events")
    op.execute("DROP TABLE events")
    op.execute("DROP FUNCTION events_refuse_change()")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {APP_ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"REVOKE USAGE, SELECT ON SEQUENCES FROM {APP_ROLE}"
    )
