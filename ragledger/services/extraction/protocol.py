"""The frames between the extraction worker (`worker`) and its child process (`child`).

A request is one JSON header line (`content_type`, `max_decompressed_bytes`,
`max_chars`, `length`) followed by `length` bytes of the document. A reply is its
length in ASCII digits on a line, then that many bytes of JSON: `{"ok": ...}` (the
extracted text), `{"error": reason}` (the document's own ExtractionError) or
`{"memory": true}` (an allocation failed under the child's RLIMIT_AS).
"""

from __future__ import annotations

import json
from typing import Any

from ragledger.services.document_text import ExtractedText, Section

MEMORY_REPLY = b'{"memory": true}'


def request_header(
    *, content_type: str, max_decompressed_bytes: int, max_chars: int, length: int
) -> bytes:
    """The header line that precedes a document's `length` bytes."""
    header = {
        "content_type": content_type,
        "max_decompressed_bytes": max_decompressed_bytes,
        "max_chars": max_chars,
        "length": length,
    }
    return json.dumps(header).encode("ascii") + b"\n"


def reply_frame(body: bytes) -> bytes:
    """A reply's body preceded by its length line."""
    return b"%d\n" % len(body) + body


def ok_body(extracted: ExtractedText) -> bytes:
    """The reply carrying the extracted text; sections as (heading path, start, length)."""
    ok = {
        "content_type": extracted.content_type,
        "text": extracted.text,
        "page_count": extracted.page_count,
        "sections": [[list(s.heading_path), s.start, len(s.text)] for s in extracted.sections],
    }
    return json.dumps({"ok": ok}).encode("ascii")


def error_body(reason: str) -> bytes:
    """The reply carrying the reason of the document's own ExtractionError."""
    return json.dumps({"error": reason}).encode("ascii")


def parse_reply(body: bytes) -> dict[str, Any] | None:
    """The reply as a dict with one of `ok`, `error`, `memory`; None when it is none of them."""
    try:
        outcome = json.loads(body)
    except ValueError:
        return None
    if not isinstance(outcome, dict) or not outcome.keys() & {"ok", "error", "memory"}:
        return None
    return outcome


def extracted_from(ok: dict[str, Any]) -> ExtractedText:
    """The ExtractedText an `ok` reply describes."""
    text: str = ok["text"]
    sections = tuple(
        Section(heading_path=tuple(path), text=text[start : start + length], start=start)
        for path, start, length in ok["sections"]
    )
    return ExtractedText(
        content_type=ok["content_type"], text=text, sections=sections, page_count=ok["page_count"]
    )
