"""`GET /metrics`: Prometheus exposition, for scrapers on allowed networks or with the token."""

from __future__ import annotations

import hmac

import structlog
from fastapi import APIRouter, HTTPException, Request, Response, status

from ragledger.api.app_services import app_services
from ragledger.api.client_address import TrustedProxies
from ragledger.core.metrics import render_latest, set_database_gauges
from ragledger.core.settings import Settings
from ragledger.projections.registry import all_subscribers
from ragledger.services.metrics_snapshot import read_anomaly_counts, read_subscriber_lags

log = structlog.get_logger(__name__)

router = APIRouter(tags=["operations"])


def check_metrics_access(request: Request, settings: Settings, allowed: TrustedProxies) -> None:
    """Let through the bearer of METRICS_TOKEN or a client on an allowed network.

    A wrong token is 401 whatever the address (a scraper with a stale token should hear
    about it); no token from elsewhere is 403.
    """
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if header:
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        if (
            scheme.lower() == "bearer"
            and token
            and hmac.compare_digest(credentials.strip().encode(), token.encode())
        ):
            return
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid metrics token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    address = app_services(request.app).trusted_proxies.client_address(request)
    if allowed.is_trusted(address):
        return
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail="metrics are readable from METRICS_ALLOWED_NETWORKS or with the "
        "METRICS_TOKEN bearer token",
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Every metric in Prometheus text format; shared gauges are read from PostgreSQL now."""
    services = app_services(request.app)
    settings = services.settings
    check_metrics_access(request, settings, services.metrics_networks)
    try:
        async with services.database.sessionmaker() as session:
            head, lags = await read_subscriber_lags(session, all_subscribers(settings))
            counts = await read_anomaly_counts(session)
        set_database_gauges(head, lags, counts)
    except Exception as exc:  # noqa: BLE001  (the process's own metrics still answer)
        log.warning("metrics_database_read_failed", error=repr(exc))
    body, content_type = render_latest()
    return Response(content=body, media_type=content_type)
