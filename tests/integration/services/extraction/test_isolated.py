"""Extraction in a child process: the same text, and a time and a memory limit it names."""

from __future__ import annotations

import pytest

from ragledger.services.extraction import (
    MARKDOWN_CONTENT_TYPE,
    PLAIN_TEXT_CONTENT_TYPE,
    ExtractionError,
    extract_text,
)
from ragledger.services.extraction.isolated import extract_text_isolated
from tests import fixtures_documents as docs

LIMITS = {"max_decompressed_bytes": 200 * 2**20, "max_chars": 20_000_000}


async def test_the_child_extracts_what_the_parser_does() -> None:
    data = docs.markdown_bytes()
    isolated = await extract_text_isolated(
        data, MARKDOWN_CONTENT_TYPE, timeout_s=300, memory_bytes=2 * 2**30, **LIMITS
    )
    assert isolated == extract_text(data, MARKDOWN_CONTENT_TYPE, **LIMITS)
    assert len(isolated.sections) > 1


async def test_the_documents_own_failure_keeps_its_reason() -> None:
    with pytest.raises(ExtractionError) as caught:
        await extract_text_isolated(
            b"   \n\n  ", PLAIN_TEXT_CONTENT_TYPE, timeout_s=300, memory_bytes=2 * 2**30, **LIMITS
        )
    with pytest.raises(ExtractionError) as direct:
        extract_text(b"   \n\n  ", PLAIN_TEXT_CONTENT_TYPE, **LIMITS)
    assert caught.value.reason == direct.value.reason


async def test_past_the_time_limit_the_child_is_killed_and_the_reason_says_so() -> None:
    # Far shorter than starting the child at all: the limit is what ends it.
    with pytest.raises(ExtractionError) as caught:
        await extract_text_isolated(
            docs.markdown_bytes(),
            MARKDOWN_CONTENT_TYPE,
            timeout_s=0.01,
            memory_bytes=2 * 2**30,
            **LIMITS,
        )
    assert "time limit of 0.01 s (EXTRACTION_TIMEOUT_S)" in caught.value.reason


async def test_past_the_memory_limit_the_reason_names_it() -> None:
    # 100 MB of text: reading and decoding it needs well over 256 MiB of address space
    # on top of the interpreter's ~100 MiB; the parser alone would take it in its stride.
    data = b"policy words here\n" * (100 * 2**20 // 18)
    with pytest.raises(ExtractionError) as caught:
        await extract_text_isolated(
            data,
            PLAIN_TEXT_CONTENT_TYPE,
            timeout_s=300,
            memory_bytes=256 * 2**20,
            max_decompressed_bytes=200 * 2**20,
            max_chars=500_000_000,
        )
    assert "memory" in caught.value.reason
    assert "256 MiB (EXTRACTION_MEMORY_BYTES)" in caught.value.reason
