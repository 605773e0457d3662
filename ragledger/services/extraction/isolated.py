"""Extraction of an uploaded file in a child process with a time and a memory limit.

Parsers of hostile formats can loop or balloon (a crafted PDF, deeply nested XML); in
the ingestion reactor that stalled every upload behind the bad one. Each extraction
runs in a fresh `python -m ragledger.services.extraction.child` whose address space is
capped (RLIMIT_AS) and which is killed past the time limit; either way the document
fails with a reason that names the limit. Starting the child costs about 0.8 s of CPU
(importing the parsers), small beside embedding a document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from ragledger.services.document_text import ExtractedText, Section
from ragledger.services.extraction import ExtractionError

CHILD_MODULE = "ragledger.services.extraction.child"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


async def extract_text_isolated(
    data: bytes,
    content_type: str,
    *,
    max_decompressed_bytes: int,
    max_chars: int,
    timeout_s: float,
    memory_bytes: int,
) -> ExtractedText:
    """extract_text in a child process; ExtractionError also when a limit is exceeded.

    OSError (the child cannot be started) is the platform's failure and propagates.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CHILD_MODULE,
        str(memory_bytes),
        str(max_decompressed_bytes),
        str(max_chars),
        content_type,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(data), timeout_s)
    except TimeoutError:
        await _kill(process)
        raise ExtractionError(
            f"extracting the text took longer than the time limit of {timeout_s:g} s "
            "(EXTRACTION_TIMEOUT_S); the file may be malformed or built to be slow to parse"
        ) from None
    except BaseException:
        await _kill(process)
        raise
    outcome = _parse(stdout)
    if outcome is not None and "memory" in outcome:
        raise ExtractionError(_over_memory(memory_bytes))
    if outcome is not None and "error" in outcome:
        raise ExtractionError(str(outcome["error"]))
    if outcome is None or "ok" not in outcome or process.returncode != 0:
        code = process.returncode or 0
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if "MemoryError" in last[0]:
            raise ExtractionError(_over_memory(memory_bytes))
        raise ExtractionError(
            f"the text extraction process failed ({how}); it may have exceeded the memory "
            f"limit of {_mib(memory_bytes)} (EXTRACTION_MEMORY_BYTES)"
        )
    return _extracted(outcome["ok"])


def _over_memory(memory_bytes: int) -> str:
    return (
        f"extracting the text needed more memory than the limit of {_mib(memory_bytes)} "
        "(EXTRACTION_MEMORY_BYTES)"
    )


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


def _parse(stdout: bytes) -> dict[str, Any] | None:
    try:
        outcome = json.loads(stdout)
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) else None


def _extracted(ok: dict[str, Any]) -> ExtractedText:
    text: str = ok["text"]
    sections = tuple(
        Section(heading_path=tuple(path), text=text[start : start + length], start=start)
        for path, start, length in ok["sections"]
    )
    return ExtractedText(
        content_type=ok["content_type"], text=text, sections=sections, page_count=ok["page_count"]
    )
