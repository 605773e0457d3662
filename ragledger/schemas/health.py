"""HTTP shapes of the health endpoint."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SubscriberHealth(BaseModel):
    """One subscriber's checkpoint and how far it trails the ledger head."""

    kind: str
    position: int
    lag: int
    failing_position: int | None = None
    last_error: str | None = None


class HealthPublic(BaseModel):
    """Liveness, for anyone: `ok`, or `degraded` when a subscriber is failing."""

    status: str = Field(description="ok or degraded")


class HealthDetail(HealthPublic):
    """Liveness and the ledger's progress, for signed-in admins and auditors."""

    ledger_head: int
    subscribers: dict[str, SubscriberHealth]
