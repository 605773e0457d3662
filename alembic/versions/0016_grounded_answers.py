"""Grounded answers: groundedness in the audit view; when a document became searchable.

`audit_answers` gains the answer's `mode` (extractive or generative), its
`groundedness` (share of checked sentences that the context supports, 0-1; NULL for
answers recorded before AnswerGenerated v2 and for the no-context answer),
`unsupported_sentences` and `declined` (why the platform said the documents do not
cover the question). A partial index serves `GET /audit/answers?max_groundedness=...`,
newest first. Existing rows keep NULLs until `ragledger projections rebuild
audit_answers` (old answers were never checked, so they have nothing to show).

`documents` and `document_versions` gain `indexed_position`, the ledger position of
the version's DocumentIndexed: a document is reported `indexed` only once the `chunks`
projection's checkpoint has reached it, i.e. once its chunks are searchable. Rows
indexed before this migration keep NULL and count as searchable (the chunks projection
had long applied them).

Revision ID: 0016_grounded_answers
Revises: 0010_event_canonical_bytes
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_grounded_answers"
down_revision: str | None = "0010_event_canonical_bytes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE audit_answers
            ADD COLUMN mode text,
            ADD COLUMN groundedness double precision,
            ADD COLUMN unsupported_sentences integer,
            ADD COLUMN declined text
        """
    )
    op.execute(
        """
        CREATE INDEX ix_audit_answers_groundedness
        ON audit_answers (groundedness, asked_position)
        WHERE groundedness IS NOT NULL
        """
    )
    op.execute("ALTER TABLE documents ADD COLUMN indexed_position bigint")
    op.execute("ALTER TABLE document_versions ADD COLUMN indexed_position bigint")


def downgrade() -> None:
    op.execute("ALTER TABLE document_versions DROP COLUMN indexed_position")
    op.execute("ALTER TABLE documents DROP COLUMN indexed_position")
    op.execute("DROP INDEX ix_audit_answers_groundedness")
    op.execute(
        """
        ALTER TABLE audit_answers
            DROP COLUMN declined,
            DROP COLUMN unsupported_sentences,
            DROP COLUMN groundedness,
            DROP COLUMN mode
        """
    )
