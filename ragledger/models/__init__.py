"""SQLAlchemy models; importing this package registers every table on `Base.metadata`."""

from ragledger.models.audit import AuditAnswerRow
from ragledger.models.base import Base
from ragledger.models.documents import ChunkRow, DocumentRow, DocumentVersionRow
from ragledger.models.ledger import BlobRow, EventRow, SubscriberCheckpoint
from ragledger.models.merkle import MerkleNodeRow
from ragledger.models.oversight import (
    AnomalyRow,
    DetectorRaisedRow,
    DetectorSignalRow,
    NotifierAttemptRow,
    NotifierWindowRow,
)
from ragledger.models.streams import StreamRow
from ragledger.models.users import User

__all__ = [
    "AnomalyRow",
    "AuditAnswerRow",
    "Base",
    "BlobRow",
    "ChunkRow",
    "DetectorRaisedRow",
    "DetectorSignalRow",
    "DocumentRow",
    "DocumentVersionRow",
    "EventRow",
    "MerkleNodeRow",
    "NotifierAttemptRow",
    "NotifierWindowRow",
    "StreamRow",
    "SubscriberCheckpoint",
    "User",
]
