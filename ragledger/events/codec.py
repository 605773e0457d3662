"""Canonical bytes and the hash chain: the exact algorithm an auditor re-implements.

canonical_bytes(event) is the UTF-8 JSON of
``{position, event_id, stream_id, stream_version, event_type, schema_version,
recorded_at, payload, metadata}`` with keys sorted at every level, separators ``,``
and ``:``, no whitespace, and non-ASCII characters written as themselves.
``recorded_at`` is ISO 8601 UTC with microseconds and ``Z``; ``event_id`` is the
UUID's canonical lower-case text. ``hash = sha256(prev_hash || canonical_bytes)``;
the first event's ``prev_hash`` is 32 zero bytes.

Payloads and metadata hold only null, booleans, integers, strings, arrays and objects
with string keys. Floats are refused (their text form is not portable); vectors travel
as base64 of little-endian float32 and exact decimals as strings. Strings holding NUL
or lone surrogates are refused, since PostgreSQL's JSONB cannot store them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import numpy as np

GENESIS_HASH = bytes(32)


class CanonicalEncodingError(ValueError):
    """A value cannot be stored in the ledger as it is."""


def check_json_value(value: Any, path: str = "$") -> None:
    """Raise CanonicalEncodingError unless `value` is storable, naming where it is not."""
    # Appends check every payload; the fast pass builds no paths and is exact for the
    # plain types. Anything it cannot vouch for gets the slow pass, which names the spot.
    if not _plainly_storable(value):
        _check_slowly(value, path)


def _plainly_storable(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return "\x00" not in value and (value.isascii() or _encodes(value))
    if kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        return all(
            type(key) is str
            and "\x00" not in key
            and (key.isascii() or _encodes(key))
            and _plainly_storable(item)
            for key, item in value.items()
        )
    if kind is list or kind is tuple:
        return all(_plainly_storable(item) for item in value)
    return False


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_slowly(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _check_string(value, path)
        return
    if isinstance(value, float):
        raise CanonicalEncodingError(
            f"{path}: floats are not allowed in the ledger; encode vectors with "
            "encode_vector() and exact numbers as strings or integers"
        )
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_slowly(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalEncodingError(f"{path}: object keys must be strings, got {key!r}")
            _check_string(key, f"{path}.<key>")
            _check_slowly(item, f"{path}.{key}")
        return
    raise CanonicalEncodingError(f"{path}: {type(value).__name__} is not a JSON value")


def _check_string(value: str, path: str) -> None:
    if "\x00" in value:
        raise CanonicalEncodingError(f"{path}: strings must not contain NUL (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalEncodingError(f"{path}: string is not valid Unicode ({exc.reason})") from exc


def canonical_json(value: Any) -> str:
    """The canonical JSON text of an already checked value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a trailing Z."""
    if moment.tzinfo is None:
        raise CanonicalEncodingError("timestamps in the ledger must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class HashedFields:
    """Everything the hash covers, with payload and metadata already canonical JSON."""

    position: int
    event_id: UUID
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    recorded_at: datetime
    payload_json: str
    metadata_json: str


def canonical_prefix(
    *, event_id: UUID, event_type: str, metadata_json: str, payload_json: str
) -> bytes:
    """The first four members of canonical_bytes, known before the append lock."""
    return (
        '{"event_id":"'
        + str(event_id)
        + '","event_type":'
        + json.dumps(event_type, ensure_ascii=False)
        + ',"metadata":'
        + metadata_json
        + ',"payload":'
        + payload_json
    ).encode("utf-8")


def canonical_suffix(
    *,
    position: int,
    recorded_at_text: str,
    schema_version: int,
    stream_id_json: str,
    stream_version: int,
) -> bytes:
    """The last five members of canonical_bytes, known only under the append lock."""
    return (
        f',"position":{int(position)},"recorded_at":"{recorded_at_text}"'
        f',"schema_version":{int(schema_version)},"stream_id":{stream_id_json}'
        f',"stream_version":{int(stream_version)}}}'
    ).encode()


def canonical_bytes(fields: HashedFields) -> bytes:
    """Canonical bytes of one event.

    The members are written in sorted key order, which yields exactly ``canonical_json``
    of the whole object (tested). The store assembles the same bytes from a prefix
    computed before the append lock and a suffix computed under it.
    """
    return canonical_prefix(
        event_id=fields.event_id,
        event_type=fields.event_type,
        metadata_json=fields.metadata_json,
        payload_json=fields.payload_json,
    ) + canonical_suffix(
        position=fields.position,
        recorded_at_text=format_timestamp(fields.recorded_at),
        schema_version=fields.schema_version,
        stream_id_json=json.dumps(fields.stream_id, ensure_ascii=False),
        stream_version=fields.stream_version,
    )


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    """sha256(prev_hash || canonical_bytes)."""
    if len(prev_hash) != 32:
        raise ValueError("prev_hash must be 32 bytes")
    return hashlib.sha256(prev_hash + canonical).digest()


def encode_vector(vector: np.ndarray | list[float]) -> str:
    """Base64 of the vector as little-endian float32, the ledger's only way to hold floats."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(encoded: str) -> np.ndarray:
    """Inverse of encode_vector."""
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4")
