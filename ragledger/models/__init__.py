"""SQLAlchemy models; importing this package registers every table on `Base.metadata`."""

from ragledger.models.base import Base
from ragledger.models.documents import ChunkRow, DocumentRow, DocumentVersionRow
from ragledger.models.ledger import BlobRow, EventRow, SubscriberCheckpoint
from ragledger.models.streams import StreamRow
from ragledger.models.users import User

__all__ = [
    "Base",
    "BlobRow",
    "ChunkRow",
    "DocumentRow",
    "DocumentVersionRow",
    "EventRow",
    "StreamRow",
    "SubscriberCheckpoint",
    "User",
]
