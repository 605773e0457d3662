"""Grounded answers: groundedness in the audit view; when a document became searchable.

`audit_answers` gains the answer's `mode` (extractive or generative), its
`groundedness` (share of checked sentences that the context supports, 0-1; NULL for
answers recorded before AnswerGenerated v2 and for the no-context answer),
`unsupported_sentences` and `declined` (why the platform said the documents do not
cover the question). A partial index serves `GET /audit/answers?max_groundedness=...`,
newest first. Existing rows are filled from their AnswerGenerated events (answers
recorded before v2 were never checked: mode generative, groundedness NULL).

`documents` and `document_versions` gain `indexed_position`, the ledger position of
the version's DocumentIndexed: a document is reported `indexed` only once the `chunks`
projection's checkpoint has reached it, i.e. once its chunks are searchable. Existing
rows get it from their DocumentIndexed events.

Revision ID: 0016_grounded_answers
Revises: 0013_token_validity
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_grounded_answers"
down_revision: str | None = "0013_token_validity"
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
    # Existing answers, from their AnswerGenerated (v1 payloads have no mode: generative).
    op.execute(
        """
        UPDATE audit_answers AS a SET
            mode = COALESCE(e.payload->>'mode', 'generative'),
            declined = e.payload->>'declined',
            groundedness = CASE WHEN NOT (e.payload->>'no_context')::boolean
                THEN (e.payload->'support'->>'groundedness')::double precision END,
            unsupported_sentences = CASE WHEN NOT (e.payload->>'no_context')::boolean
                THEN (e.payload->'support'->>'unsupported_sentences')::integer END
        FROM events AS e
        WHERE e.stream_id = 'question-' || a.question_id::text
          AND e.event_type = 'AnswerGenerated'
        """
    )
    op.execute("ALTER TABLE documents ADD COLUMN indexed_position bigint")
    op.execute("ALTER TABLE document_versions ADD COLUMN indexed_position bigint")
    op.execute(
        """
        UPDATE document_versions AS v SET indexed_position = e.position
        FROM events AS e
        WHERE e.stream_id = 'document-' || v.document_id::text
          AND e.event_type = 'DocumentIndexed'
          AND (e.payload->>'version')::integer = v.version
        """
    )
    op.execute(
        """
        UPDATE documents AS d SET indexed_position = v.indexed_position
        FROM document_versions AS v
        WHERE v.document_id = d.document_id AND v.version = d.indexed_version
        """
    )


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
