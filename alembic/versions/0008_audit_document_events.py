"""Audit views at scale: the `audit_document_events` read model for the document filter.

`GET /audit/events?document=X` lists the document's own stream and the streams of the
questions whose retrieved context held one of its chunks. Found from the ledger alone,
a popular document means tens of thousands of question streams, each looked up and
merged per page: p95 3-5 s at 1M events (bench/audit.py). The projection of the same
name keeps, per document, the positions of the events of those question streams, so a
page is one ordered range scan of (document_id, position).

`audit_document_streams` records which question streams concern which document (the
stream linked by a ContextRetrieved at `position`), so that a stream's later events
(the answer, feedback) are added as they arrive.

Revision ID: 0008_audit_document_events
Revises: 0007_ledger_append
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_audit_document_events"
down_revision: str | None = "0007_ledger_append"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Default privileges from 0001 already grant the app role DML on new tables.
    op.execute(
        """
        CREATE TABLE audit_document_streams (
            stream_id text NOT NULL,
            document_id uuid NOT NULL,
            position bigint NOT NULL,
            CONSTRAINT pk_audit_document_streams PRIMARY KEY (stream_id, document_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE audit_document_events (
            document_id uuid NOT NULL,
            position bigint NOT NULL,
            CONSTRAINT pk_audit_document_events PRIMARY KEY (document_id, position)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_document_events")
    op.execute("DROP TABLE audit_document_streams")
