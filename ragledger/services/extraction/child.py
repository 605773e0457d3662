"""The child process of isolated extraction (`python -m ragledger.services.extraction.child`).

Arguments: memory limit in bytes, max decompressed bytes, max characters, content type.
The document's bytes come on stdin; one JSON object goes to stdout: the extracted text
(`ok`), the reason of an ExtractionError (`error`), or `memory` when an allocation
failed under the address-space limit (RLIMIT_AS) set before the bytes are read. The
parent enforces the time limit by killing this process.
"""

from __future__ import annotations

import json
import resource
import sys

from ragledger.services.extraction import ExtractionError, extract_text


def main(argv: list[str]) -> int:
    """Extract the document on stdin under the memory limit; print the outcome as JSON."""
    memory_bytes, max_decompressed_bytes, max_chars = (int(a) for a in argv[:3])
    content_type = argv[3]
    # After the imports (about 100 MiB of address space), before the document's bytes;
    # never above a hard limit the process already has (a container's).
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        data = sys.stdin.buffer.read()
        try:
            extracted = extract_text(
                data,
                content_type,
                max_decompressed_bytes=max_decompressed_bytes,
                max_chars=max_chars,
            )
        except ExtractionError as exc:
            outcome: dict[str, object] = {"error": exc.reason}
        else:
            outcome = {
                "ok": {
                    "content_type": extracted.content_type,
                    "text": extracted.text,
                    "page_count": extracted.page_count,
                    "sections": [
                        [list(s.heading_path), s.start, len(s.text)] for s in extracted.sections
                    ],
                }
            }
        del data
        encoded = json.dumps(outcome).encode("ascii")
    except MemoryError:
        encoded = b'{"memory": true}'
    sys.stdout.buffer.write(encoded)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
