"""HTTP shapes of the health endpoint."""

from __future__ import annotations

from pydantic import BaseModel


class SubscriberHealth(BaseModel):
    """One subscriber's checkpoint and how far it trails the ledger head."""

    kind: str
    position: int
    lag: int
    failing_position: int | None = None
    last_error: str | None = None


class HealthPublic(BaseModel):
    """Liveness and the ledger's progress."""

    status: str
    ledger_head: int
    subscribers: dict[str, SubscriberHealth]
