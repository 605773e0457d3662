"""The verifier's encoder gives exactly the codec's canonical bytes, whatever repeats."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ragledger.events.codec import HashedFields, canonical_bytes, canonical_json
from ragledger.services.ledger_verification import StoredEventEncoder
from tests.unit.events.test_codec import json_text, json_values

timestamps = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
events = st.lists(
    st.tuples(
        st.uuids(),
        # Few streams, metadata and moments, so that the encoder's memory is exercised.
        st.sampled_from(["security", "question-1", 'odd "stream" é']),
        st.integers(1, 2**31 - 1),
        json_text.filter(bool),
        st.integers(1, 32767),
        st.sampled_from(
            [datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
        )
        | timestamps,
        st.dictionaries(json_text, json_values, max_size=5),
        st.sampled_from([{}, {"actor_id": "u-1", "actor_role": "employee"}])
        | st.dictionaries(json_text, json_text, max_size=3),
    ),
    min_size=1,
    max_size=8,
)


def _stored_text(value: object) -> str:
    # PostgreSQL writes JSONB in its own order and spacing; any valid text must do.
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=True)


def _check(batch: list[tuple], encoder: StoredEventEncoder | None = None) -> None:
    encoder = encoder or StoredEventEncoder()
    for position, (event_id, stream, version, etype, schema, at, payload, metadata) in enumerate(
        batch, start=1
    ):
        expected = canonical_bytes(
            HashedFields(
                position=position,
                event_id=event_id,
                stream_id=stream,
                stream_version=version,
                event_type=etype,
                schema_version=schema,
                recorded_at=at,
                payload_json=canonical_json(payload),
                metadata_json=canonical_json(metadata),
            )
        )
        got = encoder.canonical(
            position=position,
            event_id=event_id,
            stream_id=stream,
            stream_version=version,
            event_type=etype,
            schema_version=schema,
            payload_text=_stored_text(payload),
            metadata_text=_stored_text(metadata),
            recorded_at=at,
        )
        assert got == expected


@given(events)
def test_encoder_bytes_equal_the_codecs(batch: list[tuple]) -> None:
    _check(batch)


@given(events)
def test_encoder_stays_exact_when_its_memory_is_full(batch: list[tuple]) -> None:
    _check(batch, StoredEventEncoder(cache_limit=1))
