"""The ledger view's signed keyset cursor.

A cursor is `base64url(json) "." base64url(hmac_sha256(key, json))` with the JSON
`{"v": 1, "p": position, "o": order, "d": "next"|"prev", "f": filter fingerprint}`. The
key is derived from the server's secret key, so a cursor that was altered, made up or
issued by another server is refused (400); the fingerprint ties it to the filters and
order it was issued for, so that it cannot silently page a different query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ragledger.services.errors import DomainError

Order = Literal["newest", "oldest"]
Direction = Literal["next", "prev"]

MAX_CURSOR_CHARS = 512
CURSOR_VERSION = 1


class InvalidCursorError(DomainError):
    """A cursor that is malformed, forged, or meant for another query (HTTP 400)."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class EventCursor:
    """Where a page of the ledger starts: after `position` going `direction` in `order`."""

    position: int
    order: Order
    direction: Direction
    fingerprint: str


@lru_cache(maxsize=8)
def cursor_key(secret: str) -> bytes:
    """The cursor signing key, derived so that it signs nothing but cursors."""
    return hmac.new(secret.encode(), b"ragledger/audit-cursor/v1", hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text_value: str) -> bytes:
    if not text_value or not text_value.isascii():
        raise ValueError("not base64url")
    # validate=True refuses characters outside the alphabet instead of skipping them.
    return base64.b64decode(
        text_value + "=" * (-len(text_value) % 4), altchars=b"-_", validate=True
    )


def encode_cursor(cursor: EventCursor, key: bytes) -> str:
    """The opaque, signed form of a cursor."""
    body = json.dumps(
        {
            "v": CURSOR_VERSION,
            "p": cursor.position,
            "o": cursor.order,
            "d": cursor.direction,
            "f": cursor.fingerprint,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64encode(body)}.{_b64encode(signature)}"


def decode_cursor(token: str, key: bytes) -> EventCursor:
    """The cursor a token holds; InvalidCursorError unless it is well-formed and ours."""
    if len(token) > MAX_CURSOR_CHARS or token.count(".") != 1:
        raise InvalidCursorError("malformed cursor")
    body_text, signature_text = token.split(".")
    try:
        body = _b64decode(body_text)
        signature = _b64decode(signature_text)
    except (ValueError, binascii.Error):
        raise InvalidCursorError("malformed cursor") from None
    # The signature is checked before the body is parsed: nothing unauthenticated is
    # interpreted beyond its base64.
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidCursorError(
            "cursor signature is invalid: it was altered or not issued by this server"
        )
    try:
        data = json.loads(body)
        version, position, order, direction, fingerprint = (
            data["v"],
            data["p"],
            data["o"],
            data["d"],
            data["f"],
        )
    except (ValueError, KeyError, TypeError):
        raise InvalidCursorError("malformed cursor") from None
    if (
        version != CURSOR_VERSION
        or type(position) is not int
        or position < 0
        or order not in ("newest", "oldest")
        or direction not in ("next", "prev")
        or not isinstance(fingerprint, str)
    ):
        raise InvalidCursorError("malformed cursor")
    return EventCursor(position, order, direction, fingerprint)
