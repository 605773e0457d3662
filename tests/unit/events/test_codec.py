"""Canonical encoding and the hash: deterministic, documented, sensitive to every field."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragledger.events.codec import (
    GENESIS_HASH,
    CanonicalEncodingError,
    HashedFields,
    canonical_bytes,
    canonical_json,
    chain_hash,
    check_json_value,
    decode_vector,
    encode_vector,
    format_timestamp,
)

# Strings PostgreSQL's JSONB can hold: no NUL, no lone surrogates.
json_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | json_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
hashed_fields = st.builds(
    lambda position, event_id, stream_id, version, etype, sv, at, payload, metadata: HashedFields(
        position=position,
        event_id=event_id,
        stream_id=stream_id,
        stream_version=version,
        event_type=etype,
        schema_version=sv,
        recorded_at=at,
        payload_json=canonical_json(payload),
        metadata_json=canonical_json(metadata),
    ),
    st.integers(1, 2**62),
    st.uuids(),
    json_text.filter(bool),
    st.integers(1, 2**31 - 1),
    json_text.filter(bool),
    st.integers(1, 32767),
    timestamps,
    st.dictionaries(json_text, json_values, max_size=5),
    st.dictionaries(json_text, json_text, max_size=3),
)


@given(hashed_fields)
def test_assembled_bytes_equal_canonical_json_of_the_whole_object(fields: HashedFields) -> None:
    whole = {
        "position": fields.position,
        "event_id": str(fields.event_id),
        "stream_id": fields.stream_id,
        "stream_version": fields.stream_version,
        "event_type": fields.event_type,
        "schema_version": fields.schema_version,
        "recorded_at": format_timestamp(fields.recorded_at),
        "payload": json.loads(fields.payload_json),
        "metadata": json.loads(fields.metadata_json),
    }
    assert canonical_bytes(fields) == canonical_json(whole).encode("utf-8")


@given(json_values)
def test_canonical_json_is_stable_through_a_parse(value: object) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text)) == text


def _mutations(fields: HashedFields) -> list[HashedFields]:
    payload = json.loads(fields.payload_json)
    payload["__changed__"] = 1
    return [
        replace(fields, position=fields.position + 1),
        replace(fields, event_id=uuid.UUID(int=fields.event_id.int ^ 1)),
        replace(fields, stream_id=fields.stream_id + "x"),
        replace(fields, stream_version=fields.stream_version + 1),
        replace(fields, event_type=fields.event_type + "x"),
        replace(fields, schema_version=fields.schema_version + 1),
        replace(fields, recorded_at=fields.recorded_at + timedelta(microseconds=1)),
        replace(fields, payload_json=canonical_json(payload)),
        replace(fields, metadata_json=canonical_json({"actor_id": "someone-else"})),
    ]


@settings(max_examples=50)
@given(hashed_fields, st.binary(min_size=32, max_size=32))
def test_any_change_to_any_field_changes_the_hash(fields: HashedFields, prev: bytes) -> None:
    original = chain_hash(prev, canonical_bytes(fields))
    for changed in _mutations(fields):
        if changed == fields:
            continue
        assert chain_hash(prev, canonical_bytes(changed)) != original
    other_prev = bytes([prev[0] ^ 1]) + prev[1:]
    assert chain_hash(other_prev, canonical_bytes(fields)) != original


def test_hash_matches_the_readme_recipe() -> None:
    fields = HashedFields(
        position=1,
        event_id=uuid.UUID("01930000-0000-7000-8000-000000000001"),
        stream_id="document-1",
        stream_version=1,
        event_type="DocumentUploaded",
        schema_version=1,
        recorded_at=datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC),
        payload_json=canonical_json({"title": "Politique de congés", "size": 12}),
        metadata_json=canonical_json({"actor_id": "u1"}),
    )
    expected = (
        '{"event_id":"01930000-0000-7000-8000-000000000001","event_type":"DocumentUploaded",'
        '"metadata":{"actor_id":"u1"},"payload":{"size":12,"title":"Politique de congés"},'
        '"position":1,"recorded_at":"2026-11-27T08:00:00.123456Z","schema_version":1,'
        '"stream_id":"document-1","stream_version":1}'
    ).encode()
    assert canonical_bytes(fields) == expected
    assert chain_hash(GENESIS_HASH, expected) == hashlib.sha256(bytes(32) + expected).digest()


def test_timestamps_are_utc_with_microseconds_and_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=paris)) == (
        "2026-01-02T02:04:05.000000Z"
    )
    with pytest.raises(CanonicalEncodingError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"score": 0.5}, r"\$\.score: floats are not allowed"),
        ({"text": "a\x00b"}, "must not contain NUL"),
        ({"a\x00": 1}, "must not contain NUL"),
        ({"text": "\ud800"}, "not valid Unicode"),
        ({1: "x"}, "keys must be strings"),
        ({"when": datetime.now(UTC)}, "datetime is not a JSON value"),
        ({"nested": [{"x": float("nan")}]}, r"\$\.nested\[0\]\.x: floats"),
    ],
)
def test_values_the_ledger_refuses_get_a_clear_error(value: object, message: str) -> None:
    with pytest.raises(CanonicalEncodingError, match=message):
        check_json_value(value)


def test_chain_hash_needs_a_32_byte_prev_hash() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        chain_hash(b"short", b"{}")


@given(st.lists(st.floats(width=32, allow_nan=False), max_size=50))
def test_vectors_round_trip_as_little_endian_float32(values: list[float]) -> None:
    encoded = encode_vector(values)
    check_json_value(encoded)
    assert np.array_equal(decode_vector(encoded), np.asarray(values, dtype="<f4"))
