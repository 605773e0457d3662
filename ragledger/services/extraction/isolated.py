"""Extraction of one uploaded file in a fresh child process with a time and a memory limit.

The one-off form of `worker.ExtractionWorker` (which the ingestion reactor keeps, so
that its child serves many documents): a worker for a single document, closed after it.
"""

from __future__ import annotations

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction.worker import ExtractionWorker


async def extract_text_isolated(
    data: bytes,
    content_type: str,
    *,
    max_decompressed_bytes: int,
    max_chars: int,
    timeout_s: float,
    memory_bytes: int,
) -> ExtractedText:
    """extract_text in a fresh child process; ExtractionError also when a limit is exceeded.

    OSError (the child cannot be started) is the platform's failure and propagates.
    """
    worker = ExtractionWorker(memory_bytes=memory_bytes, max_documents=1)
    try:
        return await worker.extract(
            data,
            content_type,
            max_decompressed_bytes=max_decompressed_bytes,
            max_chars=max_chars,
            timeout_s=timeout_s,
        )
    finally:
        await worker.aclose()
