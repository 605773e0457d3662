"""An upload whose ingestion keeps failing is recorded as failed; the uploads behind it go on."""

from __future__ import annotations

import asyncio
import uuid

from ragledger.events import store
from ragledger.events.documents import document_stream
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.projections.ingestion import IngestionReactor
from ragledger.projections.runner import RunnerConfig, SubscriberRunner, run_until_caught_up
from tests.integration.projections.uploads import upload_for_hr

FAST = RunnerConfig(
    batch_size=7,
    poll_interval_s=0.2,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    standby_retry_s=0.1,
)


async def _types(db, document_id: uuid.UUID) -> list[str]:
    async with db.sessionmaker() as session:
        return [
            e.event_type for e in await store.read_stream(session, document_stream(document_id))
        ]


async def _until(check, within_s: float = 400.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_poisoned_upload_is_given_up_after_bounded_attempts(
    db, settings, fake_openai, monkeypatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    settings = settings.model_copy(
        update={
            "embedding_model": "openai/fake-embed",
            "embedding_api_base": fake_openai.base_url,
            "ingestion_max_attempts": 3,
        }
    )
    # The embedding model fails every request: the platform's fault, retried, but not
    # forever.
    fake_openai.embeddings.error_status = 400
    first = await upload_for_hr(db, b"# Leave\n\nAnnual leave is thirty days a year.\n", "leave.md")
    second = await upload_for_hr(
        db, b"# Travel\n\nTrips are booked in economy class.\n", "travel.md"
    )
    runner = SubscriberRunner(db.engine, [IngestionReactor(settings)], FAST)
    task = asyncio.create_task(runner.run())
    try:

        async def first_failed() -> bool:
            return "DocumentIngestionFailed" in await _types(db, first)

        await _until(first_failed)
        fake_openai.embeddings.error_status = None

        async def second_indexed() -> bool:
            return "DocumentIndexed" in await _types(db, second)

        await _until(second_indexed)
    finally:
        runner.stop()
        await task

    async with db.sessionmaker() as session:
        events = await store.read_stream(session, document_stream(first))
        checkpoint = await session.get(SubscriberCheckpoint, "ingestion")
    assert [e.event_type for e in events] == ["DocumentUploaded", "DocumentIngestionFailed"]
    failed = events[1].payload
    assert failed["stage"] == "ingest"
    assert "failed 3 times in a row" in failed["reason"]
    assert events[1].metadata["causation_id"] == str(events[0].event_id)
    # The checkpoint is clean again: past both uploads, no failure pending.
    assert checkpoint is not None
    assert checkpoint.failures == 0
    assert checkpoint.failing_position is None


async def test_an_upload_past_the_extraction_time_limit_fails_and_names_it(db, settings) -> None:
    """The child is killed at the limit and the upload fails naming it."""
    slow = settings.model_copy(update={"extraction_timeout_s": 0.01})
    document_id = await upload_for_hr(db, b"# Leave\n\nAnnual leave is thirty days.\n", "leave.md")
    assert await run_until_caught_up(db.engine, IngestionReactor(slow))
    async with db.sessionmaker() as session:
        events = await store.read_stream(session, document_stream(document_id))
    assert [e.event_type for e in events] == ["DocumentUploaded", "DocumentIngestionFailed"]
    assert events[1].payload["stage"] == "extract"
    assert "time limit of 0.01 s (EXTRACTION_TIMEOUT_S)" in events[1].payload["reason"]
