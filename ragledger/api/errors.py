"""One place that turns domain errors into HTTP answers (and records every denial)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from ragledger.api.app_services import app_services
from ragledger.api.request_context import event_metadata
from ragledger.events.access import AccessDenied
from ragledger.events.codec import CanonicalEncodingError
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.schemas.errors import ErrorPublic, ValidationErrorPublic
from ragledger.services.errors import AuthenticationError, DomainError, PermissionDeniedError
from ragledger.services.security_events import (
    MAX_METHOD_CHARS,
    MAX_PATH_CHARS,
    cap,
    source_address,
)

log = structlog.get_logger(__name__)

# What each refusal means in the OpenAPI schema. Routes list the ones they can answer
# with `error_responses(...)`, so that clients (and the schemathesis run in the tests)
# see every status a route returns, with its body and headers.
ERROR_DESCRIPTIONS: Mapping[int, str] = {
    400: "Malformed request: a body that cannot be parsed",
    401: "Missing, invalid, expired or revoked token, or a deactivated account",
    403: "Your role does not allow this",
    404: "Not found, or not yours to see",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported file type",
    422: "Invalid input",
    429: "Rate limit exceeded",
}
# Answers to requests that carry a body: unparsable (400), over the body limit (413,
# from BodyLimitMiddleware), invalid (422).
BODY_ERRORS = (400, 413, 422)
_HEADERS: Mapping[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Bearer",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until the limit lets a request through again",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


class ErrorResponse(JSONResponse):
    """A JSON error body that renders even when it echoes input UTF-8 cannot encode.

    JSON text may carry lone surrogates ("\\ud800") and Python keeps them in strings;
    pydantic's errors echo the `input`, and some details quote it. Encoding those to
    UTF-8 failed (a 500 in place of the 400 or 422): they become U+FFFD instead.
    """

    def render(self, content: Any) -> bytes:
        """UTF-8 JSON, lone surrogates replaced."""
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            repaired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return repaired.encode("utf-8")


def error_responses(
    *codes: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of these error statuses (and of those in `described`,
    with a description of the route's own)."""
    described = described or {}
    entries: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, *described}):
        entry: dict[str, Any] = {
            "model": ValidationErrorPublic if code == 422 else ErrorPublic,
            "description": described.get(code, ERROR_DESCRIPTIONS[code]),
        }
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        entries[code] = entry
    return entries


async def _record_denial(
    request: Request, exc: AuthenticationError | PermissionDeniedError
) -> None:
    required = exc.required_roles if isinstance(exc, PermissionDeniedError) else ()
    metadata = event_metadata(request)
    # One event per source and window, with a count: bogus tokens are free to send.
    await app_services(request.app).security_events.record(
        AccessDenied(
            user_id=exc.user_id,  # type: ignore[arg-type]
            method=cap(request.method, MAX_METHOD_CHARS) or "",
            path=cap(request.url.path, MAX_PATH_CHARS) or "",
            reason=exc.reason,
            status_code=exc.status_code,
            required_roles=required,
        ),
        metadata,
        source=f"{source_address(metadata.client_ip)}|{exc.user_id or '-'}|{exc.reason}",
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
    return ErrorResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def conflict_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Optimistic concurrency conflicts are 409."""
    return ErrorResponse({"detail": str(exc)}, status_code=409)


async def unstorable_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Values the ledger cannot hold (NUL, invalid Unicode) are 422."""
    return ErrorResponse({"detail": str(exc)}, status_code=422)


async def unavailable_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A backing service (Redis) that cannot be reached is 503 with a JSON body, never 500.

    Rate limits and the embedding cache fall back on their own while Redis is away and
    revocation never needs it; this catches whatever use of Redis is left.
    """
    log.error("backing_service_unavailable", error=type(exc).__name__)
    return ErrorResponse(
        {"detail": "a backing service is unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON is 400; well-formed but invalid input is 422 with pydantic's errors."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return ErrorResponse({"detail": "malformed JSON body"}, status_code=400)
    return ErrorResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(WrongExpectedVersionError, conflict_handler)
    app.add_exception_handler(CanonicalEncodingError, unstorable_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(RedisError, unavailable_handler)
