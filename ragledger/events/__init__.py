"""The ledger. Importing this package registers every event family."""

from ragledger.events import access, documents  # noqa: F401  (registers the event types)
