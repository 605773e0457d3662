"""The child process of isolated extraction (`python -m ragledger.services.extraction.child`).

Argument: the memory limit in bytes, set as the address-space limit (RLIMIT_AS) after
the imports and before any document is read. Then documents come on stdin, one request
frame each, and each gets one reply frame on stdout (`protocol`), until stdin closes.
After a failed allocation the reply is `memory` and the process exits: the parent
replaces it. The parent enforces the time limit by killing this process.
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any, BinaryIO

from ragledger.services.extraction import ExtractionError, extract_text, protocol


def main(argv: list[str]) -> int:
    """Extract each document on stdin under the memory limit; reply to each on stdout."""
    memory_bytes = int(argv[0])
    # After the imports (about 100 MiB of address space), before the documents' bytes;
    # never above a hard limit the process already has (a container's).
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.readline()
        if not header:
            return 0
        try:
            body = _extract_one(stdin, json.loads(header))
        except MemoryError:
            body = protocol.MEMORY_REPLY
        stdout.write(protocol.reply_frame(body))
        stdout.flush()
        if body == protocol.MEMORY_REPLY:
            # The rest of the document may still be unread: this stream is done.
            return 0


def _extract_one(stdin: BinaryIO, request: dict[str, Any]) -> bytes:
    data = stdin.read(int(request["length"]))
    try:
        extracted = extract_text(
            data,
            str(request["content_type"]),
            max_decompressed_bytes=int(request["max_decompressed_bytes"]),
            max_chars=int(request["max_chars"]),
        )
    except ExtractionError as exc:
        return protocol.error_body(exc.reason)
    del data
    return protocol.ok_body(extracted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
