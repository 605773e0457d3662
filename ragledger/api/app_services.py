"""The objects the app's lifespan opens for the routes, in one typed container.

The lifespan builds one `AppServices` and keeps it on `app.state.services`; routes take
it through `ServicesDep` (api/deps.py), the console, middleware and handlers through
`app_services`. Nothing else reads `app.state` for these: what is fixed when the app is
built (settings, trusted proxies, keys) travels in the same container, and a test that
changes one replaces the container with `install_app_services`.

`rate_limits.get_rate_limits` keeps its own accessor: that module sits below this one
(it is imported here) and serves any app, the small one of the edge tests included.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from ragledger.api.background import BackgroundWork
from ragledger.api.client_address import TrustedProxies
from ragledger.api.rate_limits import RateLimits
from ragledger.api.shutdown import ShutdownSignal
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from ragledger.services.mail import Mailer
from ragledger.services.security_events import SecurityEventRecorder
from ragledger.services.signing import DigestSigner
from ragledger.services.tokens import TokenService


@dataclass(frozen=True, slots=True)
class AppServices:
    """The settings, keys, database and long-lived helpers of one running app."""

    settings: Settings
    # Whose X-Forwarded-* headers are believed (TRUSTED_PROXIES).
    trusted_proxies: TrustedProxies
    # Who may read /metrics without its token (METRICS_ALLOWED_NETWORKS).
    metrics_networks: TrustedProxies
    # Derived from the secret key once, when the app is built.
    csrf_key: bytes
    cursor_key: bytes
    database: Database
    mailer: Mailer
    background: BackgroundWork
    security_events: SecurityEventRecorder
    signer: DigestSigner
    tokens: TokenService
    rate_limits: RateLimits
    shutdown: ShutdownSignal


def install_app_services(app: Starlette, services: AppServices) -> None:
    """Make `services` the app's container (the lifespan; a test swapping a setting)."""
    app.state.services = services


def app_services(app: Starlette) -> AppServices:
    """The running app's services; RuntimeError before the lifespan has started."""
    services = getattr(app.state, "services", None)
    if not isinstance(services, AppServices):
        raise RuntimeError("app.state.services is not set: the app's lifespan has not started")
    return services
