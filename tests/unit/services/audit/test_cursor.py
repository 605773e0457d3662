"""Audit cursors: encode, decode, signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragledger.services.audit.cursor import (
    EventCursor,
    InvalidCursorError,
    cursor_key,
    decode_cursor,
    encode_cursor,
)

KEY = cursor_key("a server secret that is long enough")
OTHER_KEY = cursor_key("another server's secret")

cursors = st.builds(
    EventCursor,
    position=st.integers(min_value=0, max_value=2**63 - 1),
    order=st.sampled_from(["newest", "oldest"]),
    direction=st.sampled_from(["next", "prev"]),
    fingerprint=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(body: bytes, key: bytes = KEY) -> str:
    return f"{_b64(body)}.{_b64(hmac.new(key, body, hashlib.sha256).digest())}"


@given(cursors)
def test_a_cursor_survives_the_round_trip(cursor: EventCursor) -> None:
    token = encode_cursor(cursor, KEY)
    assert decode_cursor(token, KEY) == cursor
    # Opaque and URL-safe: nothing to escape in a query string.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@given(cursors, st.data())
def test_any_changed_character_is_refused(cursor: EventCursor, data: st.DataObject) -> None:
    token = encode_cursor(cursor, KEY)
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    )
    changed = token[:index] + replacement + token[index + 1 :]
    try:
        decoded = decode_cursor(changed, KEY)
    except InvalidCursorError:
        return
    # Only a change in the unused low bits of a part's last base64 character decodes to
    # the same bytes, and so to the same cursor.
    assert decoded == cursor


def test_a_cursor_from_another_key_is_refused_as_forged() -> None:
    token = encode_cursor(EventCursor(10, "newest", "next", "0" * 16), OTHER_KEY)
    with pytest.raises(InvalidCursorError, match="signature"):
        decode_cursor(token, KEY)


def test_a_made_up_position_is_refused_as_forged() -> None:
    token = encode_cursor(EventCursor(10, "newest", "next", "0" * 16), KEY)
    body, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["p"] = 999_999
    forged_body = _b64(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(InvalidCursorError, match="signature"):
        decode_cursor(f"{forged_body}.{signature}", KEY)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot-at-all",
        "a.b.c",
        "!!!.???",
        "ünïcode.ßig",
        "eyJ2IjoxfQ",  # base64 JSON without a signature part
        "x" * 600 + "." + "y" * 43,
        "%00%00.%00",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(token, KEY)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"v": 1}',
        b'{"v": 2, "p": 1, "o": "newest", "d": "next", "f": "x"}',
        b'{"v": 1, "p": -1, "o": "newest", "d": "next", "f": "x"}',
        b'{"v": 1, "p": "1", "o": "newest", "d": "next", "f": "x"}',
        b'{"v": 1, "p": true, "o": "newest", "d": "next", "f": "x"}',
        b'{"v": 1, "p": 1.5, "o": "newest", "d": "next", "f": "x"}',
        b'{"v": 1, "p": 1, "o": "sideways", "d": "next", "f": "x"}',
        b'{"v": 1, "p": 1, "o": "newest", "d": "back", "f": "x"}',
        b'{"v": 1, "p": 1, "o": "newest", "d": "next", "f": 7}',
    ],
)
def test_a_correctly_signed_but_invalid_body_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidCursorError, match="malformed"):
        decode_cursor(_signed(body), KEY)


def test_the_key_is_derived_per_secret() -> None:
    assert cursor_key("s1") != cursor_key("s2")
    # Derived, not the secret itself: a cursor key never signs a token for something else.
    assert cursor_key("s1") != b"s1"
    assert len(cursor_key("s1")) == 32
