"""The ledger. Importing this package registers every event family."""

from ragledger.events import (  # noqa: F401  (registers the event types)
    access,
    audit,
    documents,
    ledger_audit,
    oversight,
    questions,
)
