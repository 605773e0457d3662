"""The standing extraction child: reused, and replaced after a failure or its last document."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest

from ragledger.services.extraction import (
    HTML_CONTENT_TYPE,
    MARKDOWN_CONTENT_TYPE,
    PLAIN_TEXT_CONTENT_TYPE,
    ExtractionError,
    extract_text,
)
from ragledger.services.extraction.worker import ExtractionWorker
from tests import fixtures_documents as docs

LIMITS = {"max_decompressed_bytes": 200 * 2**20, "max_chars": 20_000_000}
# 7 MB of HTML: a few seconds of parsing here, long enough to be cut off or killed.
SLOW_HTML = docs.html_bytes() * 10_000


def running(pid: int) -> bool:
    """Whether a process with this id exists (a reaped child no longer does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def worker() -> AsyncIterator[ExtractionWorker]:
    worker = ExtractionWorker(memory_bytes=2 * 2**30, max_documents=100)
    try:
        yield worker
    finally:
        await worker.aclose()


async def extract_markdown(worker: ExtractionWorker) -> None:
    data = docs.markdown_bytes()
    extracted = await worker.extract(data, MARKDOWN_CONTENT_TYPE, timeout_s=300, **LIMITS)
    assert extracted == extract_text(data, MARKDOWN_CONTENT_TYPE, **LIMITS)


async def test_one_child_extracts_one_document_after_another(worker) -> None:
    assert worker.pid is None
    await extract_markdown(worker)
    first = worker.pid
    assert first is not None
    html = await worker.extract(docs.html_bytes(), HTML_CONTENT_TYPE, timeout_s=300, **LIMITS)
    assert html == extract_text(docs.html_bytes(), HTML_CONTENT_TYPE, **LIMITS)
    assert worker.pid == first


async def test_a_documents_own_failure_keeps_the_child(worker) -> None:
    await extract_markdown(worker)
    first = worker.pid
    with pytest.raises(ExtractionError) as caught:
        await worker.extract(b"   \n\n  ", PLAIN_TEXT_CONTENT_TYPE, timeout_s=300, **LIMITS)
    with pytest.raises(ExtractionError) as direct:
        extract_text(b"   \n\n  ", PLAIN_TEXT_CONTENT_TYPE, **LIMITS)
    assert caught.value.reason == direct.value.reason
    assert worker.pid == first


async def test_past_the_time_limit_the_child_is_killed_and_the_next_gets_a_fresh_one(
    worker,
) -> None:
    await extract_markdown(worker)
    first = worker.pid
    assert first is not None
    with pytest.raises(ExtractionError) as caught:
        await worker.extract(SLOW_HTML, HTML_CONTENT_TYPE, timeout_s=0.3, **LIMITS)
    assert "time limit of 0.3 s (EXTRACTION_TIMEOUT_S)" in caught.value.reason
    assert worker.pid is None
    assert not running(first)
    await extract_markdown(worker)
    assert worker.pid not in (None, first)


async def test_past_the_memory_limit_the_next_document_gets_a_fresh_child() -> None:
    worker = ExtractionWorker(memory_bytes=256 * 2**20, max_documents=100)
    try:
        await extract_markdown(worker)
        first = worker.pid
        assert first is not None
        # As in test_extraction_isolated: 100 MB of text overflows 256 MiB of address space.
        data = b"policy words here\n" * (100 * 2**20 // 18)
        with pytest.raises(ExtractionError) as caught:
            await worker.extract(
                data,
                PLAIN_TEXT_CONTENT_TYPE,
                timeout_s=300,
                max_decompressed_bytes=200 * 2**20,
                max_chars=500_000_000,
            )
        assert "memory" in caught.value.reason
        assert "256 MiB (EXTRACTION_MEMORY_BYTES)" in caught.value.reason
        assert not running(first)
        await extract_markdown(worker)
        assert worker.pid not in (None, first)
    finally:
        await worker.aclose()


async def test_a_child_that_crashes_mid_document_fails_it_and_is_replaced(worker) -> None:
    await extract_markdown(worker)
    first = worker.pid
    assert first is not None
    slow = asyncio.create_task(
        worker.extract(SLOW_HTML, HTML_CONTENT_TYPE, timeout_s=300, **LIMITS)
    )
    await asyncio.sleep(0.5)
    assert not slow.done()
    os.kill(first, signal.SIGKILL)
    with pytest.raises(ExtractionError) as caught:
        await slow
    assert caught.value.reason == (
        "the text extraction process failed (signal SIGKILL); it may have exceeded the "
        "memory limit of 2,048 MiB (EXTRACTION_MEMORY_BYTES)"
    )
    assert not running(first)
    await extract_markdown(worker)
    assert worker.pid not in (None, first)


async def test_a_child_that_died_between_documents_is_replaced_without_failing_one(
    worker,
) -> None:
    await extract_markdown(worker)
    first = worker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for _ in range(1000):
        if not running(first):
            break
        await asyncio.sleep(0.01)
    assert not running(first)
    # The event loop learns of the exit from its child watcher, just after the reaping.
    await asyncio.sleep(0.2)
    await extract_markdown(worker)
    assert worker.pid not in (None, first)


async def test_the_child_is_replaced_after_its_last_document() -> None:
    worker = ExtractionWorker(memory_bytes=2 * 2**30, max_documents=2)
    try:
        await extract_markdown(worker)
        first = worker.pid
        assert first is not None
        await extract_markdown(worker)
        # Its second document was its last: it was told to stop and has exited.
        assert worker.pid is None
        assert not running(first)
        await extract_markdown(worker)
        assert worker.pid not in (None, first)
    finally:
        await worker.aclose()


async def test_one_document_per_child_starts_a_fresh_child_for_each() -> None:
    worker = ExtractionWorker(memory_bytes=2 * 2**30, max_documents=1)
    pids: list[int] = []
    try:
        for _ in range(2):
            data = docs.markdown_bytes()
            task = asyncio.create_task(
                worker.extract(data, MARKDOWN_CONTENT_TYPE, timeout_s=300, **LIMITS)
            )
            # Starting the child (importing the parsers) takes far longer than a poll.
            while (pid := worker.pid) is None:
                assert not task.done()
                await asyncio.sleep(0.001)
            pids.append(pid)
            assert await task == extract_text(data, MARKDOWN_CONTENT_TYPE, **LIMITS)
            assert worker.pid is None
    finally:
        await worker.aclose()
    assert len(set(pids)) == 2
    assert not any(running(pid) for pid in pids)


async def test_closing_ends_the_child_and_a_later_document_starts_another(worker) -> None:
    await extract_markdown(worker)
    first = worker.pid
    assert first is not None
    await worker.aclose()
    assert worker.pid is None
    assert not running(first)
    await extract_markdown(worker)
    assert worker.pid not in (None, first)
