"""One place that turns domain errors into HTTP answers (and records every denial)."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ragledger.api.request_context import event_metadata
from ragledger.events.access import AccessDenied
from ragledger.events.codec import CanonicalEncodingError
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.services.errors import AuthenticationError, DomainError, PermissionDeniedError
from ragledger.services.security_events import record_security_event

log = structlog.get_logger(__name__)


async def _record_denial(
    request: Request, exc: AuthenticationError | PermissionDeniedError
) -> None:
    required = exc.required_roles if isinstance(exc, PermissionDeniedError) else ()
    await record_security_event(
        request.app.state.database.sessionmaker,
        AccessDenied(
            user_id=exc.user_id,  # type: ignore[arg-type]
            method=request.method,
            path=request.url.path,
            reason=exc.reason,
            status_code=exc.status_code,
            required_roles=required,
        ),
        event_metadata(request),
    )


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """DomainError -> its status code and detail; denials are recorded first."""
    assert isinstance(exc, DomainError)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
        # A request without any token is just anonymous; anything else is a denial.
        if exc.reason != "no_token":
            await _record_denial(request, exc)
    elif isinstance(exc, PermissionDeniedError):
        await _record_denial(request, exc)
    log.info("request_refused", status=exc.status_code, detail=exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def conflict_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Optimistic concurrency conflicts are 409."""
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def unstorable_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Values the ledger cannot hold (NUL, invalid Unicode) are 422."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON is 400; well-formed but invalid input is 422 with pydantic's errors."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(WrongExpectedVersionError, conflict_handler)
    app.add_exception_handler(CanonicalEncodingError, unstorable_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
