"""Every subscriber the runner drives, by name."""

from __future__ import annotations

from ragledger.core.settings import Settings
from ragledger.projections.anomalies import AnomaliesProjection
from ragledger.projections.anomaly_detector import AnomalyDetectorReactor
from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.audit_document_events import AuditDocumentEventsProjection
from ragledger.projections.chunks import ChunksProjection
from ragledger.projections.digest_publisher import DigestPublisherReactor
from ragledger.projections.documents import DocumentsProjection
from ragledger.projections.ingestion import IngestionReactor
from ragledger.projections.merkle_tree import MerkleTreeProjection
from ragledger.projections.notifier import NotifierReactor
from ragledger.projections.streams import StreamsProjection
from ragledger.projections.subscriber import Subscriber


def all_subscribers(settings: Settings) -> list[Subscriber]:
    """Fresh instances of every projection and reactor, in a stable order.

    The digest publisher runs only where a destination is configured, so that one added
    later starts from the first digest.
    """
    subscribers: list[Subscriber] = [
        StreamsProjection(),
        DocumentsProjection(),
        ChunksProjection(),
        AuditAnswersProjection(),
        AuditDocumentEventsProjection(),
        MerkleTreeProjection(),
        IngestionReactor(settings),
        AnomaliesProjection(),
        AnomalyDetectorReactor(settings),
        NotifierReactor(settings),
    ]
    if settings.digest_publish_dir is not None or settings.digest_publish_url is not None:
        subscribers.append(DigestPublisherReactor(settings))
    return subscribers
