"""Audit views: the `audit_answers` read model and the ledger indexes the audit filters use.

Revision ID: 0004_audit_answers
Revises: 0003_documents
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_audit_answers"
down_revision: str | None = "0003_documents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Indexes on the ledger are allowed (the table refuses changes to rows, not to its
    # indexes). Each one costs every append a little, so only the audit filters that
    # would otherwise scan the whole ledger get one. The expressions and predicates are
    # written exactly as the queries in services/audit/ write them (constants,
    # not parameters), or PostgreSQL would not match them.
    op.execute("CREATE INDEX ix_events_recorded_at ON events (recorded_at)")
    op.execute(
        "CREATE INDEX ix_events_actor_id_position ON events ((metadata->>'actor_id'), position)"
    )
    # Which questions had a document in their context: a partial GIN index covering only
    # the ContextRetrieved events, so the rest of the ledger pays nothing for it.
    op.execute(
        "CREATE INDEX ix_events_context_chunks ON events "
        "USING gin ((payload->'chunks') jsonb_path_ops) WHERE event_type = 'ContextRetrieved'"
    )
    # Who read a question's story later (AuditViewed aimed at it).
    op.execute(
        "CREATE INDEX ix_events_audit_target ON events ((payload->>'target_id'), position) "
        "WHERE event_type = 'AuditViewed'"
    )

    op.execute(
        """
        CREATE TABLE audit_answers (
            question_id uuid NOT NULL,
            asked_by uuid NOT NULL,
            asker_role text NOT NULL,
            asked_at timestamptz NOT NULL,
            question text NOT NULL,
            top_k integer NOT NULL,
            status text NOT NULL DEFAULT 'pending',
            answer text,
            model text,
            failure_reason text,
            embedding_model text,
            retrieval_ms integer,
            ttft_ms integer,
            llm_ms integer,
            total_ms integer,
            prompt_tokens integer,
            completion_tokens integer,
            citations integer[] NOT NULL DEFAULT '{}',
            citation_count integer NOT NULL DEFAULT 0,
            context_chunk_count integer NOT NULL DEFAULT 0,
            removed_by_access_filter integer,
            context jsonb NOT NULL DEFAULT '[]',
            context_document_ids uuid[] NOT NULL DEFAULT '{}',
            cited_document_ids uuid[] NOT NULL DEFAULT '{}',
            prompt_sha256 text,
            feedback_helpful boolean,
            feedback_count integer NOT NULL DEFAULT 0,
            answered_at timestamptz,
            asked_position bigint NOT NULL,
            last_position bigint NOT NULL,
            CONSTRAINT pk_audit_answers PRIMARY KEY (question_id),
            CONSTRAINT uq_audit_answers_asked_position UNIQUE (asked_position),
            CONSTRAINT ck_audit_answers_status
                CHECK (status IN ('pending', 'answered', 'no_context', 'failed'))
        )
        """
    )
    op.execute("CREATE INDEX ix_audit_answers_asked_at ON audit_answers (asked_at)")
    op.execute(
        "CREATE INDEX ix_audit_answers_asked_by_asked_position "
        "ON audit_answers (asked_by, asked_position)"
    )
    op.execute(
        "CREATE INDEX ix_audit_answers_status_asked_position "
        "ON audit_answers (status, asked_position)"
    )
    op.execute(
        "CREATE INDEX ix_audit_answers_context_document_ids "
        "ON audit_answers USING gin (context_document_ids)"
    )
    op.execute(
        "CREATE INDEX ix_audit_answers_cited_document_ids "
        "ON audit_answers USING gin (cited_document_ids)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_answers")
    op.execute("DROP INDEX ix_events_audit_target")
    op.execute("DROP INDEX ix_events_context_chunks")
    op.execute("DROP INDEX ix_events_actor_id_position")
    op.execute("DROP INDEX ix_events_recorded_at")
