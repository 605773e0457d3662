"""Indexes for the audit views at scale (measured with bench/audit.py at 1M events).

- events (stream_id, position): a page of one large stream (the security stream held
  44k events) read the whole stream through (stream_id, stream_version) and sorted it,
  p95 ~275 ms; with this index it is one ordered index scan.
- audit_answers, partial on "answered without citation" and "with citations": the
  `without_citation` filter and its page count scanned the whole table (first page
  165 -> 30 ms, deep 630 -> 59 ms in the benchmark's hand test).

Revision ID: 0006_audit_indexes
Revises: 0005_anomalies
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_audit_indexes"
down_revision: str | None = "0005_anomalies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_events_stream_id_position ON events (stream_id, position)")
    op.execute(
        "CREATE INDEX ix_audit_answers_uncited ON audit_answers (asked_position) "
        "WHERE status = 'answered' AND citation_count = 0"
    )
    op.execute(
        "CREATE INDEX ix_audit_answers_cited ON audit_answers (asked_position) "
        "WHERE citation_count > 0"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_audit_answers_cited")
    op.execute("DROP INDEX ix_audit_answers_uncited")
    op.execute("DROP INDEX ix_events_stream_id_position")
