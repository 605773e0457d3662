"""Documents, their versions, and the searchable chunks (pgvector HNSW + full text).

Revision ID: 0003_documents
Revises: 0002_users
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_documents"
down_revision: str | None = "0002_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE documents (
            document_id uuid NOT NULL,
            title text NOT NULL,
            filename text NOT NULL,
            content_type text NOT NULL,
            current_version integer NOT NULL,
            indexed_version integer,
            status text NOT NULL,
            failure_reason text,
            access_groups text[] NOT NULL DEFAULT '{}',
            chunk_count integer NOT NULL DEFAULT 0,
            retracted boolean NOT NULL DEFAULT false,
            uploaded_by uuid,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            last_position bigint NOT NULL,
            CONSTRAINT pk_documents PRIMARY KEY (document_id),
            CONSTRAINT ck_documents_status
                CHECK (status IN ('pending', 'indexed', 'failed', 'retracted'))
        )
        """
    )
    op.execute("CREATE INDEX ix_documents_status ON documents (status)")
    op.execute("CREATE INDEX ix_documents_access_groups ON documents USING gin (access_groups)")
    op.execute("CREATE INDEX ix_documents_created_at ON documents (created_at, document_id)")
    op.execute(
        """
        CREATE TABLE document_versions (
            document_id uuid NOT NULL,
            version integer NOT NULL,
            title text NOT NULL,
            filename text NOT NULL,
            original_filename text NOT NULL,
            blob_sha256 text NOT NULL,
            size bigint NOT NULL,
            content_type text NOT NULL,
            status text NOT NULL,
            failure_reason text,
            chunk_count integer NOT NULL DEFAULT 0,
            char_count integer,
            page_count integer,
            uploaded_by uuid,
            uploaded_at timestamptz NOT NULL,
            indexed_at timestamptz,
            uploaded_position bigint NOT NULL,
            CONSTRAINT pk_document_versions PRIMARY KEY (document_id, version)
        )
        """
    )
    # array_to_string is only STABLE; a generated column needs an IMMUTABLE expression,
    # and joining text with a space is immutable in fact.
    op.execute(
        """
        CREATE FUNCTION ragledger_join_words(text[]) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string($1, ' ') $$
        """
    )
    # The text search configuration is 'english' (stemming, stop words); documents in
    # other languages still match on exact words through the 'simple' part.
    op.execute(
        """
        CREATE TABLE chunks (
            chunk_id uuid NOT NULL,
            document_id uuid NOT NULL,
            version integer NOT NULL,
            chunk_index integer NOT NULL,
            title text NOT NULL,
            heading_path text[] NOT NULL DEFAULT '{}',
            text text NOT NULL,
            text_sha256 text NOT NULL,
            start_offset integer NOT NULL,
            end_offset integer NOT NULL,
            token_count integer NOT NULL,
            embedding vector(384),
            tsv tsvector GENERATED ALWAYS AS (
                setweight(
                    to_tsvector('english', title || ' ' || ragledger_join_words(heading_path)),
                    'A'
                )
                || setweight(to_tsvector('english', text), 'B')
                || to_tsvector('simple', text)
            ) STORED,
            access_groups text[] NOT NULL DEFAULT '{}',
            searchable boolean NOT NULL DEFAULT false,
            CONSTRAINT pk_chunks PRIMARY KEY (chunk_id),
            CONSTRAINT uq_chunks_document_id_version_chunk_index
                UNIQUE (document_id, version, chunk_index)
        )
        """
    )
    # HNSW with pgvector's defaults (m=16, ef_construction=64): recall@10 is checked
    # against an exact scan by bench/retrieval.py.
    op.execute(
        "CREATE INDEX ix_chunks_embedding_hnsw ON chunks "
        "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    op.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
    op.execute("CREATE INDEX ix_chunks_access_groups ON chunks USING gin (access_groups)")
    op.execute("CREATE INDEX ix_chunks_document_id_version ON chunks (document_id, version)")

    # The chunks projection's own view of each document (it cannot read `documents`,
    # which another projection maintains at its own pace).
    op.execute(
        """
        CREATE TABLE chunk_sources (
            document_id uuid NOT NULL,
            current_version integer NOT NULL,
            title text NOT NULL,
            access_groups text[] NOT NULL DEFAULT '{}',
            retracted boolean NOT NULL DEFAULT false,
            CONSTRAINT pk_chunk_sources PRIMARY KEY (document_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE chunk_sources")
    op.execute("DROP TABLE chunks")
    op.execute("DROP FUNCTION ragledger_join_words(text[])")
    op.execute("DROP TABLE document_versions")
    op.execute("DROP TABLE documents")
