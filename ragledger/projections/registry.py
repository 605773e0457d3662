"""Every subscriber the runner drives, by name."""

from __future__ import annotations

from ragledger.core.settings import Settings
from ragledger.projections.chunks import ChunksProjection
from ragledger.projections.documents import DocumentsProjection
from ragledger.projections.ingestion import IngestionReactor
from ragledger.projections.streams import StreamsProjection
from ragledger.projections.subscriber import Subscriber


def all_subscribers(settings: Settings) -> list[Subscriber]:
    """Fresh instances of every projection and reactor, in a stable order."""
    return [
        StreamsProjection(),
        DocumentsProjection(),
        ChunksProjection(),
        IngestionReactor(settings),
    ]
