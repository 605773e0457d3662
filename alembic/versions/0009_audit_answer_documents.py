"""Audit views at scale: the `audit_answer_documents` read model for the answers' document filter.

`GET /audit/answers?document=X` (in context, or cited) tested the uuid arrays of
`audit_answers` through GIN indexes: for a popular document that read some 40k wide
heap pages per request to find the page and count the total, p95 330-550 ms at 1M
events (bench/audit.py). The `audit_answers` projection now also keeps one narrow row per
(document, question) for every document in a question's context or citations, in the
same transaction as the question's row, so a page is a backward range scan of
(document_id, asked_position) and the total a count over that range, both index-only
(`in_context` and `cited` are carried in the key's INCLUDE).

The GIN index on `cited_document_ids` served only that filter and is dropped (it costs
every projected answer a write); the one on `context_document_ids` stays for the
document history view.

Existing rows are backfilled from `audit_answers`, so a database projected before this
migration needs no rebuild.

Revision ID: 0009_audit_answer_documents
Revises: 0008_audit_document_events
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_audit_answer_documents"
down_revision: str | None = "0008_audit_document_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Default privileges from 0001 already grant the app role DML on new tables.
    op.execute(
        """
        CREATE TABLE audit_answer_documents (
            document_id uuid NOT NULL,
            asked_position bigint NOT NULL,
            in_context boolean NOT NULL,
            cited boolean NOT NULL,
            CONSTRAINT pk_audit_answer_documents
                PRIMARY KEY (document_id, asked_position) INCLUDE (in_context, cited)
        )
        """
    )
    op.execute(
        """
        INSERT INTO audit_answer_documents (document_id, asked_position, in_context, cited)
        SELECT d.document_id, a.asked_position,
               d.document_id = ANY (a.context_document_ids),
               d.document_id = ANY (a.cited_document_ids)
        FROM audit_answers AS a
        CROSS JOIN LATERAL (
            SELECT unnest(a.context_document_ids) UNION SELECT unnest(a.cited_document_ids)
        ) AS d(document_id)
        """
    )
    op.execute("DROP INDEX ix_audit_answers_cited_document_ids")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_audit_answers_cited_document_ids "
        "ON audit_answers USING gin (cited_document_ids)"
    )
    op.execute("DROP TABLE audit_answer_documents")
