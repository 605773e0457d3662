"""SQLAlchemy models; importing this package registers every table on `Base.metadata`."""

from ragledger.models.base import Base
from ragledger.models.ledger import BlobRow, EventRow, SubscriberCheckpoint
from ragledger.models.streams import StreamRow

__all__ = ["Base", "BlobRow", "EventRow", "StreamRow", "SubscriberCheckpoint"]
