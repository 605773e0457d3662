"""Oversight events: anomalies found in the ledger, the mail about them, their acknowledgement.

An anomaly is the stream `anomaly-<id>`. Its payloads carry no personal data beyond
opaque ids: the subject names a user by id or an address by IP, and the evidence is a
list of ledger positions, so the facts themselves stay where they were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ragledger.events.registry import event_type


def anomaly_stream(anomaly_id: UUID) -> str:
    """The stream of one anomaly."""
    return f"anomaly-{anomaly_id}"


@event_type
@dataclass(frozen=True, slots=True)
class AnomalyDetected:
    """A rule found something unusual; `evidence_positions` are the events that show it."""

    anomaly_id: UUID
    rule: str
    severity: str
    subject: str
    summary: str
    evidence_positions: tuple[int, ...]


@event_type
@dataclass(frozen=True, slots=True)
class AnomalyNotified:
    """Admins were told about an anomaly (or it was grouped into another one's mail).

    `transport` is `smtp` (sent), `log` (no mail server: written to the log), `grouped`
    (another mail of the same rule and subject covers it, `grouped_into`) or `none` (no
    active admin to tell). `grouped_count` is how many earlier grouped anomalies this
    mail reported. `possible_duplicate` is set when an earlier attempt may have been
    delivered before the process stopped (see projections/notifier.py).
    """

    anomaly_id: UUID
    recipients: int
    grouped_count: int
    transport: str
    grouped_into: UUID | None = None
    possible_duplicate: bool = False


@event_type
@dataclass(frozen=True, slots=True)
class AnomalyNotificationFailed:
    """Mail about an anomaly could not be sent; it stays unsent and is retried."""

    anomaly_id: UUID
    attempt: int
    error: str


@event_type
@dataclass(frozen=True, slots=True)
class AnomalyAcknowledged:
    """An admin acknowledged an anomaly."""

    anomaly_id: UUID
    acknowledged_by: UUID
    note: str | None


def evaluation_stream(evaluation_id: UUID) -> str:
    """The stream of one evaluation run."""
    return f"evaluation-{evaluation_id}"


@event_type
@dataclass(frozen=True, slots=True)
class EvaluationCompleted:
    """An evaluation set was run through search and answers (`ragledger eval`).

    `metrics` maps names such as `hybrid.recall@5` or `answers.citation_precision` to
    decimal strings (the ledger holds no floats); a measure that could not be taken is
    absent. `dataset_sha256` is the hash of the dataset file's bytes, so two runs can
    be compared only when they measured the same questions.
    """

    evaluation_id: UUID
    dataset_name: str
    dataset_sha256: str
    questions: int
    unanswerable: int
    top_k: int
    mode: str
    embedding_model: str
    metrics: dict[str, str]
