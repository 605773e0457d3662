"""Event dataclasses to payloads and back, upcasting old schema versions."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ragledger.core.ids import uuid7
from ragledger.events.envelope import NewEvent, RecordedEvent
from ragledger.events.payloads import from_payload, to_payload
from ragledger.events.registry import EventRegistry, UnknownEventTypeError


class Color(enum.StrEnum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class ThingHappened:
    thing_id: uuid.UUID
    at: datetime
    tags: tuple[str, ...]
    color: Color
    parts: tuple[Part, ...]
    note: str | None = None


def _recorded(event_type: str, version: int, payload: dict) -> RecordedEvent:
    return RecordedEvent(
        position=1,
        event_id=uuid7(),
        stream_id="thing-1",
        stream_version=1,
        event_type=event_type,
        schema_version=version,
        payload=payload,
        metadata={},
        recorded_at=datetime.now(UTC),
        prev_hash=bytes(32),
        hash=bytes(32),
    )


def test_payload_round_trip() -> None:
    event = ThingHappened(
        thing_id=uuid.uuid4(),
        at=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
        tags=("a", "b"),
        color=Color.RED,
        parts=(Part("bolt", 3),),
    )
    payload = to_payload(event)
    assert payload["thing_id"] == str(event.thing_id)
    assert payload["at"] == "2026-11-27T08:00:00.000000Z"
    assert payload["parts"] == [{"name": "bolt", "count": 3}]
    assert from_payload(ThingHappened, payload) == event


def test_unknown_payload_fields_are_an_error() -> None:
    with pytest.raises(ValueError, match="unknown payload fields"):
        from_payload(Part, {"name": "x", "count": 1, "extra": True})


def test_registry_wraps_and_decodes_with_upcasters() -> None:
    registry = EventRegistry()

    @dataclass(frozen=True, slots=True)
    class Renamed:
        title: str
        language: str

    registry.register(Renamed, name="Renamed", version=3)

    @registry.upcaster("Renamed", 1)
    def v1_to_v2(payload: dict) -> dict:
        return {"title": payload["name"]}

    @registry.upcaster("Renamed", 2)
    def v2_to_v3(payload: dict) -> dict:
        return {**payload, "language": "en"}

    new = registry.to_new_event(Renamed("Leave policy", "fr"))
    assert isinstance(new, NewEvent)
    assert (new.event_type, new.schema_version) == ("Renamed", 3)
    assert registry.decode(_recorded("Renamed", 1, {"name": "Old"})) == Renamed("Old", "en")
    assert registry.decode(_recorded("Renamed", 3, {"title": "T", "language": "de"})) == Renamed(
        "T", "de"
    )
    with pytest.raises(UnknownEventTypeError, match="newer than this code"):
        registry.decode(_recorded("Renamed", 4, {}))
    with pytest.raises(UnknownEventTypeError):
        registry.decode(_recorded("Nope", 1, {}))


def test_registering_two_classes_under_one_name_is_refused() -> None:
    registry = EventRegistry()

    @dataclass(frozen=True)
    class A:
        x: int

    @dataclass(frozen=True)
    class B:
        x: int

    registry.register(A, name="Same")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(B, name="Same")


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(200)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    millis = [i.int >> 80 for i in ids]
    assert millis == sorted(millis)


def test_answer_generated_v1_reads_as_an_unchecked_generative_answer() -> None:
    from ragledger.events.questions import AnswerGenerated
    from ragledger.events.registry import registry

    question_id = uuid7()
    v1 = {
        "question_id": str(question_id),
        "answer": "Thirty days [1].",
        "model": "openai/gpt",
        "prompt_sha256": "ab" * 32,
        "citations": [1],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4},
        "timings_ms": {"total_ms": 9},
        "no_context": False,
    }
    event = registry.decode(_recorded("AnswerGenerated", 1, v1))
    assert isinstance(event, AnswerGenerated)
    assert (event.mode, event.support, event.declined, event.generated_answer) == (
        "generative",
        None,
        None,
        None,
    )
    assert event.citations == (1,)
    assert registry.to_new_event(event).schema_version == 2
