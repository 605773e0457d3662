"""The ingestion reactor keeps one extraction child for its uploads and ends it when it stops."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from ragledger.events import store
from ragledger.events.documents import document_stream
from ragledger.projections.ingestion import IngestionReactor
from ragledger.projections.runner import RunnerConfig, SubscriberRunner, run_until_caught_up
from ragledger.services.extraction.worker import CHILD_MODULE
from tests.integration.projections.uploads import upload_for_hr

FAST = RunnerConfig(batch_size=7, poll_interval_s=0.2, standby_retry_s=0.1)


def extraction_children() -> list[int]:
    """The ids of this process's children that run the extraction child module."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # It ended while we looked.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and CHILD_MODULE.encode() in cmdline:
            found.append(int(entry.name))
    return found


async def _indexed(db, document_id: uuid.UUID, within_s: float = 300.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        async with db.sessionmaker() as session:
            types = [
                e.event_type for e in await store.read_stream(session, document_stream(document_id))
            ]
        assert "DocumentIngestionFailed" not in types
        if "DocumentIndexed" in types:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not indexed: {types}"
        await asyncio.sleep(0.05)


def _fake_embeddings(settings, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    return settings.model_copy(
        update={"embedding_model": "openai/fake-embed", "embedding_api_base": fake_openai.base_url}
    )


async def test_one_child_extracts_the_uploads_and_ends_when_the_runner_stops(
    db, settings, fake_openai, monkeypatch
) -> None:
    settings = _fake_embeddings(settings, fake_openai, monkeypatch)
    assert settings.extraction_worker_documents > 2
    reactor = IngestionReactor(settings)
    runner = SubscriberRunner(db.engine, [reactor], FAST)
    task = asyncio.create_task(runner.run())
    try:
        await _indexed(
            db, await upload_for_hr(db, b"# Leave\n\nAnnual leave is 30 days.\n", "a.md")
        )
        child = reactor.extraction.pid
        assert child is not None
        assert extraction_children() == [child]
        await _indexed(db, await upload_for_hr(db, b"# Travel\n\nTrips go economy.\n", "b.md"))
        assert reactor.extraction.pid == child
    finally:
        runner.stop()
        await task
    assert reactor.extraction.pid is None
    assert extraction_children() == []


async def test_catching_up_once_leaves_no_extraction_child(
    db, settings, fake_openai, monkeypatch
) -> None:
    settings = _fake_embeddings(settings, fake_openai, monkeypatch)
    document_id = await upload_for_hr(db, b"# Leave\n\nAnnual leave is 30 days.\n", "a.md")
    reactor = IngestionReactor(settings)
    assert await run_until_caught_up(db.engine, reactor)
    await _indexed(db, document_id, within_s=0)
    assert reactor.extraction.pid is None
    assert extraction_children() == []
