"""Who and where a request comes from, as event metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from ragledger.api.app_services import app_services
from ragledger.events.envelope import EventMetadata

if TYPE_CHECKING:
    from ragledger.models.users import User


def client_ip(request: HTTPConnection) -> str:
    """The client's address, believing X-Forwarded-For only from trusted proxies."""
    return app_services(request.app).trusted_proxies.client_address(request)


def event_metadata(request: HTTPConnection, user: User | None = None) -> EventMetadata:
    """Metadata for events caused by this request."""
    user = user if user is not None else getattr(request.state, "user", None)
    request_id = request.scope.get("state", {}).get("request_id")
    return EventMetadata(
        actor_id=str(user.id) if user is not None else None,
        actor_role=user.role if user is not None else None,
        request_id=request_id,
        correlation_id=request_id,
        client_ip=client_ip(request),
        user_agent=(request.headers.get("user-agent") or "")[:256] or None,
    )
