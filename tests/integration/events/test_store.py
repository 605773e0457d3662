"""The event store against a real PostgreSQL: appends, reads, conflicts, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select, text

from ragledger.events import store
from ragledger.events.blobs import get_blob, put_blob
from ragledger.events.codec import GENESIS_HASH, CanonicalEncodingError, canonical_json
from ragledger.events.envelope import EventMetadata, NewEvent
from ragledger.events.errors import WrongExpectedVersionError
from ragledger.events.store import NO_STREAM, StreamAppend
from ragledger.models.ledger import BlobRow, EventRow
from tests.unit.events.test_codec import json_values


async def _count(db) -> int:
    async with db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(EventRow))


async def test_append_assigns_positions_versions_and_chains_hashes(db) -> None:
    meta = EventMetadata(actor_id="u-1", actor_role="admin", request_id="r-1")
    async with db.sessionmaker() as session, session.begin():
        first = await store.append(
            session, "doc-1", [NewEvent("A", {"n": 1}), NewEvent("B", {"n": 2})], metadata=meta
        )
        second = await store.append(session, "doc-2", [NewEvent("A", {"n": 3})])
    assert [e.position for e in first + second] == [1, 2, 3]
    assert [(e.stream_id, e.stream_version) for e in first + second] == [
        ("doc-1", 1),
        ("doc-1", 2),
        ("doc-2", 1),
    ]
    assert first[0].prev_hash == GENESIS_HASH
    assert first[1].prev_hash == first[0].hash
    assert second[0].prev_hash == first[1].hash

    async with db.sessionmaker() as session:
        stored = await store.read_all(session)
        head = await store.head(session)
        stream = await store.read_stream(session, "doc-1")
        only_b = await store.read_all(session, event_types={"B"})
    assert stored == first + second
    assert stored[0].metadata == {"actor_id": "u-1", "actor_role": "admin", "request_id": "r-1"}
    assert (head.position, head.hash) == (3, second[0].hash)
    assert [e.event_type for e in stream] == ["A", "B"]
    assert [e.position for e in only_b] == [2]


async def test_empty_ledger_head_is_genesis(db) -> None:
    async with db.sessionmaker() as session:
        head = await store.head(session)
        assert await store.stream_version(session, "nothing") == 0
    assert (head.position, head.hash) == (0, GENESIS_HASH)


async def test_stale_expected_version_raises_and_writes_nothing(db) -> None:
    async with db.sessionmaker() as session, session.begin():
        await store.append(session, "user-1", [NewEvent("A", {})], expected_version=NO_STREAM)

    async def conflicting() -> None:
        async with db.sessionmaker() as session, session.begin():
            await store.append(session, "other", [NewEvent("X", {})])
            await store.append(session, "user-1", [NewEvent("B", {})], expected_version=0)

    with pytest.raises(WrongExpectedVersionError) as caught:
        await conflicting()
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("user-1", 0, 1)
    assert "user-1" in str(caught.value)
    # The whole transaction rolled back, including the other stream's event.
    assert await _count(db) == 1

    async with db.sessionmaker() as session, session.begin():
        await store.append(session, "user-1", [NewEvent("B", {})], expected_version=1)
    assert await _count(db) == 2


async def test_append_many_checks_every_stream_before_writing(db) -> None:
    with pytest.raises(WrongExpectedVersionError):
        async with db.sessionmaker() as session, session.begin():
            await store.append_many(
                session,
                [
                    StreamAppend("a", [NewEvent("A", {})], expected_version=NO_STREAM),
                    StreamAppend("b", [NewEvent("B", {})], expected_version=5),
                ],
            )
    assert await _count(db) == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"question": "what\x00now"}, "must not contain NUL"),
        ({"score": 0.25}, "floats are not allowed"),
        ({"bad": "\udc80"}, "not valid Unicode"),
    ],
)
async def test_unstorable_payloads_are_refused_before_anything_is_written(
    db, payload: dict, message: str
) -> None:
    async with db.sessionmaker() as session, session.begin():
        await store.append(session, "s", [NewEvent("Before", {})])
    with pytest.raises(CanonicalEncodingError, match=message):
        async with db.sessionmaker() as session, session.begin():
            await store.append(session, "s", [NewEvent("Ok", {}), NewEvent("Bad", payload)])
    assert await _count(db) == 1


async def test_concurrent_writers_leave_no_gaps_duplicates_or_disorder(db) -> None:
    """8 writers, 2,000+ events, shared and own streams, a reader consuming meanwhile."""
    writers, rounds, batch = 8, 26, 10  # 8 * 26 * 10 = 2,080 events
    total = writers * rounds * batch
    seen: list[int] = []
    done = asyncio.Event()

    async def writer(index: int) -> None:
        for round_no in range(rounds):
            stream = "shared" if round_no % 2 else f"own-{index}"
            events = [
                NewEvent("Wrote", {"writer": index, "round": round_no, "i": i})
                for i in range(batch)
            ]
            async with db.sessionmaker() as session, session.begin():
                await store.append(session, stream, events)

    async def reader() -> None:
        position = 0
        while True:
            async with db.sessionmaker() as session:
                events = await store.read_all(session, after=position, limit=300)
            if events:
                seen.extend(e.position for e in events)
                position = events[-1].position
            elif done.is_set() and position >= total:
                return
            else:
                await asyncio.sleep(0.01)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in range(writers)))
    done.set()
    await asyncio.wait_for(reading, timeout=60)

    assert seen == list(range(1, total + 1)), "reader saw every position once, in order"
    async with db.sessionmaker() as session:
        events = await store.read_all(session, limit=total + 10)
    assert [e.position for e in events] == list(range(1, total + 1))
    per_stream: dict[str, list[int]] = {}
    for recorded in events:
        per_stream.setdefault(recorded.stream_id, []).append(recorded.stream_version)
    for stream_id, versions in per_stream.items():
        assert versions == list(range(1, len(versions) + 1)), stream_id
    payloads = Counter(canonical_json(e.payload) for e in events)
    assert len(payloads) == total, "no event lost or duplicated"
    for previous, current in itertools.pairwise(events):
        assert current.prev_hash == previous.hash


async def test_blobs_are_stored_once_by_content(db) -> None:
    async with db.sessionmaker() as session, session.begin():
        first = await put_blob(session, b"policy bytes")
        second = await put_blob(session, b"policy bytes")
    assert first == second
    async with db.sessionmaker() as session:
        assert await get_blob(session, first) == b"policy bytes"
        assert await get_blob(session, "0" * 64) is None
        assert await session.scalar(select(func.count()).select_from(BlobRow)) == 1


async def test_stream_ids_must_be_non_empty(db) -> None:
    async with db.sessionmaker() as session, session.begin():
        with pytest.raises(ValueError, match="stream_id"):
            await store.append(session, "", [NewEvent("A", {})])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=json_values)
async def test_canonical_bytes_survive_a_round_trip_through_jsonb(db, value: object) -> None:
    async with db.sessionmaker() as session:
        stored = await session.scalar(
            text("SELECT CAST(:value AS jsonb)::text"), {"value": canonical_json(value)}
        )
    assert canonical_json(json.loads(stored)) == canonical_json(value)
