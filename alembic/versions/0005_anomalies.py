"""Anomalies: the `anomalies` read model and the state of the detector and notifier reactors.

Revision ID: 0005_anomalies
Revises: 0004_audit_answers
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_anomalies"
down_revision: str | None = "0004_audit_answers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE anomalies (
            anomaly_id uuid NOT NULL,
            rule text NOT NULL,
            severity text NOT NULL,
            subject text NOT NULL,
            summary text NOT NULL,
            evidence_positions bigint[] NOT NULL DEFAULT '{}',
            detected_at timestamptz NOT NULL,
            detected_position bigint NOT NULL,
            notified_at timestamptz,
            notification_transport text,
            notified_recipients integer,
            grouped_count integer NOT NULL DEFAULT 0,
            grouped_into uuid,
            possible_duplicate boolean NOT NULL DEFAULT false,
            notification_failures integer NOT NULL DEFAULT 0,
            last_notification_error text,
            acknowledged_at timestamptz,
            acknowledged_by uuid,
            acknowledgement_note text,
            last_position bigint NOT NULL,
            CONSTRAINT pk_anomalies PRIMARY KEY (anomaly_id)
        )
        """
    )
    # The list is newest first, filtered by one of these; each index ends with the sort
    # key so that a filtered page is an index range scan.
    op.execute("CREATE INDEX ix_anomalies_detected_position ON anomalies (detected_position)")
    op.execute(
        "CREATE INDEX ix_anomalies_rule_detected_position ON anomalies (rule, detected_position)"
    )
    op.execute(
        "CREATE INDEX ix_anomalies_severity_detected_position "
        "ON anomalies (severity, detected_position)"
    )
    op.execute(
        "CREATE INDEX ix_anomalies_subject_detected_position "
        "ON anomalies (subject, detected_position)"
    )
    op.execute(
        "CREATE INDEX ix_anomalies_unacknowledged ON anomalies (detected_position) "
        "WHERE acknowledged_at IS NULL"
    )

    # The detector's sliding windows: one row per counted fact, pruned past the longest
    # window (the baseline days).
    op.execute(
        """
        CREATE TABLE anomaly_detector_signals (
            id bigint GENERATED ALWAYS AS IDENTITY,
            kind text NOT NULL,
            subject text NOT NULL,
            position bigint NOT NULL,
            at timestamptz NOT NULL,
            size bigint NOT NULL DEFAULT 1,
            CONSTRAINT pk_anomaly_detector_signals PRIMARY KEY (id)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_anomaly_detector_signals_kind_subject_at "
        "ON anomaly_detector_signals (kind, subject, at)"
    )
    op.execute("CREATE INDEX ix_anomaly_detector_signals_at ON anomaly_detector_signals (at)")
    op.execute(
        """
        CREATE TABLE anomaly_detector_raised (
            rule text NOT NULL,
            subject text NOT NULL,
            last_raised_at timestamptz NOT NULL,
            last_anomaly_id uuid NOT NULL,
            suppressed integer NOT NULL DEFAULT 0,
            CONSTRAINT pk_anomaly_detector_raised PRIMARY KEY (rule, subject)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE notifier_mail_windows (
            rule text NOT NULL,
            subject text NOT NULL,
            last_sent_at timestamptz NOT NULL,
            last_anomaly_id uuid NOT NULL,
            grouped_since integer NOT NULL DEFAULT 0,
            CONSTRAINT pk_notifier_mail_windows PRIMARY KEY (rule, subject)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE notifier_attempts (
            anomaly_id uuid NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL,
            failure_recorded boolean NOT NULL DEFAULT false,
            last_error text,
            updated_at timestamptz NOT NULL,
            CONSTRAINT pk_notifier_attempts PRIMARY KEY (anomaly_id),
            CONSTRAINT ck_notifier_attempts_state CHECK (state IN ('sending', 'failed'))
        )
        """
    )
    # Default privileges from 0001 already grant the app role DML on new tables.


def downgrade() -> None:
    op.execute("DROP TABLE notifier_attempts")
    op.execute("DROP TABLE notifier_mail_windows")
    op.execute("DROP TABLE anomaly_detector_raised")
    op.execute("DROP TABLE anomaly_detector_signals")
    op.execute("DROP TABLE anomalies")
