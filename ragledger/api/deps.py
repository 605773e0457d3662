"""Dependencies of the routes, as Annotated aliases.

Every route states who may call it by taking one of `CurrentUser`, `EmployeeUser`,
`AuditorUser` or `AdminUser`; a test walks the OpenAPI schema to check that none but
the public ones can be reached anonymously.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from ragledger.api.app_services import AppServices, app_services
from ragledger.api.browser_session import SAFE_METHODS, SESSION_COOKIE, Viewer, check_csrf
from ragledger.core.database import session_scope
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from ragledger.models.users import Role, User
from ragledger.services.errors import AuthenticationError, PermissionDeniedError
from ragledger.services.tokens import TokenClaims, TokenService

# Text that reaches a query as a parameter: PostgreSQL's text cannot hold NUL and the
# driver refuses such a parameter (it was a 500), so validation refuses it first (422).
NO_NUL = r"^[^\x00]*$"


async def get_services(request: Request) -> AppServices:
    """The database and helpers the app's lifespan opened."""
    return app_services(request.app)


ServicesDep = Annotated[AppServices, Depends(get_services)]


async def get_database(services: ServicesDep) -> Database:
    """The process's database handles, set up by the app's lifespan."""
    return services.database


async def get_settings_dep(services: ServicesDep) -> Settings:
    """The settings the app was built with."""
    return services.settings


async def get_token_service(
    services: Annotated[AppServices, Depends(get_services)],
) -> TokenService:
    """Issues and checks access tokens."""
    return services.tokens


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit on success, roll back on error."""
    async for session in session_scope(database.sessionmaker):
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": the transaction commits (and its connection goes back to the pool)
# when the endpoint returns, before the response is sent. With the default scope it
# would stay open until the last byte reached the client: a streamed answer held a pooled
# connection for its whole length (20 streams emptied the pool), and a request that
# appended held the ledger's append lock while its response was being written.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
TokensDep = Annotated[TokenService, Depends(get_token_service)]

bearer_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/jwt/login", auto_error=False)


async def current_session(
    request: Request,
    session: SessionDep,
    tokens: TokensDep,
    token: Annotated[str | None, Depends(bearer_scheme)],
) -> tuple[User, TokenClaims]:
    """The request's account and token, admitted by `TokenService.authenticate`.

    The token is the bearer token, else the console's cookie. 401 without one; a state
    change carried by the cookie must also pass the CSRF checks of
    api/browser_session.py (403 otherwise).
    """
    from_cookie = False
    if not token:
        token = request.cookies.get(SESSION_COOKIE)
        from_cookie = bool(token)
    if not token:
        raise AuthenticationError("not authenticated", reason="no_token")
    user, claims = await tokens.authenticate(session, token)
    request.state.token_claims = claims
    request.state.user = user
    # A copy that outlives the request's transaction (a refusal rolls it back).
    request.state.viewer = Viewer(id=user.id, email=user.email, role=user.role)
    if from_cookie and request.method not in SAFE_METHODS:
        await check_csrf(request, claims)
    return user, claims


async def current_claims(
    signed_in: Annotated[tuple[User, TokenClaims], Depends(current_session)],
) -> TokenClaims:
    """The valid, unrevoked token of the request; 401 otherwise."""
    return signed_in[1]


async def current_user(
    signed_in: Annotated[tuple[User, TokenClaims], Depends(current_session)],
) -> User:
    """The active user the token belongs to; 401 for unknown or deactivated accounts."""
    return signed_in[0]


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, User]]:
    """A dependency admitting active users with one of `roles`; 403 otherwise."""
    allowed = frozenset(r.value for r in roles)

    async def dependency(user: Annotated[User, Depends(current_user)]) -> User:
        if user.role not in allowed:
            raise PermissionDeniedError(
                "your role does not allow this",
                reason="role",
                user_id=user.id,
                required_roles=tuple(sorted(allowed)),
            )
        return user

    dependency.__name__ = f"require_{'_or_'.join(sorted(allowed))}"
    return dependency


CurrentUser = Annotated[User, Depends(current_user)]
EmployeeUser = Annotated[User, Depends(require_roles(Role.EMPLOYEE, Role.AUDITOR, Role.ADMIN))]
AuditorUser = Annotated[User, Depends(require_roles(Role.AUDITOR, Role.ADMIN))]
AdminUser = Annotated[User, Depends(require_roles(Role.ADMIN))]
