"""Health: the database answers; for admins and auditors, the ledger head and subscriber lag."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ragledger.api.deps import (
    SessionDep,
    SettingsDep,
    TokensDep,
    bearer_scheme,
    current_session,
)
from ragledger.events import store
from ragledger.models.users import Role, User
from ragledger.projections.registry import all_subscribers
from ragledger.schemas.health import HealthDetail, HealthPublic, SubscriberHealth
from ragledger.services.errors import AuthenticationError
from ragledger.services.subscriber_status import subscriber_statuses

router = APIRouter(tags=["health"])

_SEES_DETAILS = frozenset({Role.ADMIN.value, Role.AUDITOR.value})


async def _signed_in_user(
    request: Request, session: SessionDep, tokens: TokensDep, token: str | None
) -> User | None:
    """The request's active user, or None: a probe without a valid token is not refused."""
    if not token:
        return None
    try:
        user, _claims = await current_session(request, session, tokens, token)
    except AuthenticationError:
        return None
    return user


@router.get("/health", response_model=HealthDetail | HealthPublic)
async def health(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    tokens: TokensDep,
    token: Annotated[str | None, Depends(bearer_scheme)],
) -> HealthDetail | HealthPublic:
    """Status for anyone; ledger head and subscribers for signed-in admins and auditors."""
    head = await store.head(session)
    statuses = await subscriber_statuses(session, all_subscribers(settings))
    failing = any(s.failing_position is not None or s.last_error for s in statuses)
    status = "degraded" if failing else "ok"
    user = await _signed_in_user(request, session, tokens, token)
    if user is None or user.role not in _SEES_DETAILS:
        # The head, positions and error texts describe the ledger and the code to anyone
        # who can reach the port; a load balancer needs only the status.
        return HealthPublic(status=status)
    return HealthDetail(
        status=status,
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
