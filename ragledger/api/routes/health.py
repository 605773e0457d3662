"""Health: the database answers, the ledger head, and how far each subscriber trails it."""

from __future__ import annotations

from fastapi import APIRouter

from ragledger.api.deps import SessionDep, SettingsDep
from ragledger.events import store
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import subscriber_statuses
from ragledger.schemas.health import HealthPublic, SubscriberHealth

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
async def health(session: SessionDep, settings: SettingsDep) -> HealthPublic:
    """Report the ledger head and each subscriber's lag (public, no authentication)."""
    head = await store.head(session)
    statuses = await subscriber_statuses(session, all_subscribers(settings))
    return HealthPublic(
        status="degraded"
        if any(s.failing_position is not None or s.last_error for s in statuses)
        else "ok",
        ledger_head=head.position,
        subscribers={
            s.name: SubscriberHealth(
                kind=s.kind,
                position=s.position,
                lag=s.lag,
                failing_position=s.failing_position,
                last_error=s.last_error,
            )
            for s in statuses
        },
    )
