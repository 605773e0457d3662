"""The ledger. Importing this package registers every event family."""

from ragledger.events import access  # noqa: F401  (registers the access events)
