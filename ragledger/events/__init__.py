"""The ledger. Importing this package registers every event family."""

from ragledger.events import access, documents, questions  # noqa: F401  (registers event types)
