"""Pure ASGI middleware answering 413 to request bodies larger than their limit.

Two kinds of body, two limits:
- bodies the framework parses whole in memory — JSON (`application/json`,
  `application/*+json`), a missing content type (FastAPI parses that as JSON) and
  urlencoded forms — are held to `max_json_bytes` everywhere, since parsing multiplies
  their size in memory;
- every other body (multipart uploads, raw bytes) is spooled or streamed, so it gets the
  limit of the longest matching path prefix in `path_limits`, else `max_other_bytes`.

A declared Content-Length over the limit is refused before the app runs. A body without
one (chunked) is counted as the app reads it; the read that crosses the limit raises
`RequestBodyTooLargeError`, an HTTPException(413), which FastAPI re-raises while it
parses the body, before the route runs, so the client gets a 413 JSON answer (from the
app's HTTPException handler, or from here if the error escapes the app).

Why not the built-in limit (`FastAPI(max_body_size=...)`, per-router and per-route
`max_body_size`, on Starlette's `RequestBodyLimitMiddleware`; fastapi 0.165.0, starlette
1.10.0)? Checked against the behaviour `tests/integration/api/test_edge_middleware.py`
pins, it lacks:
- a limit by content type: it has one number per app, router or route, so a JSON body
  sent to the upload route would get the upload limit, and raw or multipart bodies
  elsewhere the JSON limit (or no limit);
- our answer: its 413 is fixed text, `Content Too Large`, as `text/plain` when its
  middleware answers (always the case for a declared Content-Length over the limit, and
  for a route that never reads its body), with no limit in it; ours is JSON
  `{"detail": "request body too large (limit N bytes)"}` everywhere;
- the edge headers on that 413: FastAPI installs the app-wide limit outside the user
  middleware, so its own 413 carries neither the CORS nor the security headers (a
  browser page cannot even read it); this middleware is registered inside them;
- refusal before the app: a declared oversize Content-Length is refused only when the
  route reads the body or starts its response, so a route that reads nothing has run
  its side effects first; here the app never runs;
- a non-numeric Content-Length is ignored (as if absent) rather than refused with 400;
- a log line (`request_body_too_large`, with path and limit) for each refusal.
Counting a chunked body as it is read, and unwrapping the exception groups of task
groups, are the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

# Generous on purpose: non-JSON bodies are uploads, streamed to a spooled temp file,
# and the routes that take them set their own limit through `path_limits`.
DEFAULT_MAX_OTHER_BYTES = 16 * 1024 * 1024

_IN_MEMORY_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})


class RequestBodyTooLargeError(HTTPException):
    """The request body grew past its limit while being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_detail(limit))
        self.limit = limit


class BodyLimitMiddleware:
    """Refuse request bodies over their limit with 413, before the route sees them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_json_bytes: int,
        max_other_bytes: int = DEFAULT_MAX_OTHER_BYTES,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        for name, value in (
            ("max_json_bytes", max_json_bytes),
            ("max_other_bytes", max_other_bytes),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        prefixes: list[tuple[str, int]] = []
        for prefix, limit in (path_limits or {}).items():
            if not prefix.startswith("/") or limit < 0:
                raise ValueError(
                    f"invalid body limit {prefix!r}: {limit}; expected a path prefix "
                    "starting with '/' and a limit >= 0"
                )
            prefixes.append((prefix.rstrip("/") or "/", limit))
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_other_bytes = max_other_bytes
        # Longest first, so the most specific prefix wins.
        self.path_limits = tuple(sorted(prefixes, key=lambda item: len(item[0]), reverse=True))

    def limit_for(self, scope: Scope) -> int:
        """The byte limit for this request's body, from its content type and path."""
        if _parsed_in_memory(_header(scope, b"content-type")):
            return self.max_json_bytes
        path: str = scope["path"]
        for prefix, limit in self.path_limits:
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.max_other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        raw_length = _header(scope, b"content-length")
        if raw_length is not None:
            if not raw_length.strip().isdigit():
                # uvicorn's parsers already refuse this; kept for other servers.
                response = JSONResponse({"detail": "invalid Content-Length header"}, 400)
                await response(scope, receive, send)
                return
            if int(raw_length) > limit:
                log.info(
                    "request_body_too_large",
                    path=scope["path"],
                    content_length=int(raw_length),
                    limit=limit,
                )
                await _too_large_response(limit)(scope, receive, send)
                return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            error = _body_limit_error(exc)
            if error is None:
                raise
            log.info("request_body_too_large", path=scope["path"], received=received, limit=limit)
            if response_started:
                # Too late for a 413; returning ends the exchange and the server drops
                # the connection, which is all a client that is still sending can get.
                log.warning("request_body_too_large_after_response_start", path=scope["path"])
                return
            await _too_large_response(error.limit)(scope, receive, send)


def _detail(limit: int) -> str:
    return f"request body too large (limit {limit} bytes)"


def _too_large_response(limit: int) -> JSONResponse:
    # No `Connection: close`: uvicorn then reads and discards the unread rest of the body
    # on a kept-alive connection, so a client still sending (httpx, curl) gets the 413;
    # with it, uvicorn closes at once and such clients see a reset instead.
    return JSONResponse({"detail": _detail(limit)}, status_code=413)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _parsed_in_memory(content_type: str | None) -> bool:
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in _IN_MEMORY_TYPES or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _body_limit_error(exc: BaseException) -> RequestBodyTooLargeError | None:
    if isinstance(exc, RequestBodyTooLargeError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        # Task groups (streaming responses, BaseHTTPMiddleware) wrap what they raise;
        # only a group made of nothing but our signal is ours to answer.
        matched, rest = exc.split(RequestBodyTooLargeError)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            if isinstance(leaf, RequestBodyTooLargeError):
                return leaf
    return None
