"""The objects the app's lifespan opens for the routes, in one typed container.

The lifespan builds one `AppServices` and keeps it on `app.state.services`; routes take
it through `ServicesDep` (api/deps.py), middleware and handlers through `app_services`.
What is fixed when the app is built (settings, trusted proxies, keys) stays on
`app.state` itself, where tests replace it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from ragledger.api.background import BackgroundWork
from ragledger.api.rate_limits import RateLimits
from ragledger.api.shutdown import ShutdownSignal
from ragledger.core.runtime import Database
from ragledger.services.mail import Mailer
from ragledger.services.security_events import SecurityEventRecorder
from ragledger.services.signing import DigestSigner
from ragledger.services.tokens import TokenService


@dataclass(frozen=True, slots=True)
class AppServices:
    """The database and the long-lived helpers of one running app."""

    database: Database
    mailer: Mailer
    background: BackgroundWork
    security_events: SecurityEventRecorder
    signer: DigestSigner
    tokens: TokenService
    rate_limits: RateLimits
    shutdown: ShutdownSignal


def app_services(app: Starlette) -> AppServices:
    """The running app's services; RuntimeError before the lifespan has started."""
    services = getattr(app.state, "services", None)
    if not isinstance(services, AppServices):
        raise RuntimeError("app.state.services is not set: the app's lifespan has not started")
    return services
