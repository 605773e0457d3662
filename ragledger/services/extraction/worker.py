"""A standing child process that extracts documents in turn, under a time and a memory limit.

Parsers of hostile formats can loop or balloon (a crafted PDF, deeply nested XML); in
the ingestion reactor that stalled every upload behind the bad one. So extraction runs
in a child (`python -m ragledger.services.extraction.child`) whose address space is
capped (RLIMIT_AS) and which is killed past the time limit; either way the document
fails with a reason that names the limit. Starting a child costs about 0.8 s of CPU
(importing the parsers), more than extracting a typical page, so one child serves up to
`max_documents` documents one after another (EXTRACTION_WORKER_DOCUMENTS). It is
replaced after any failure (the time limit, memory, a crash, an unreadable reply) and
after its last document; 1 is a fresh child per document.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass

import structlog

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction import protocol
from ragledger.services.extraction.errors import ExtractionError

log = structlog.get_logger(__name__)

CHILD_MODULE = "ragledger.services.extraction.child"

# A child told to stop (stdin closed) or already dying exits in well under a second; one
# that has not after this long is killed.
_EXIT_GRACE_S = 5.0
# The end of the child's stderr kept to explain a crash (a MemoryError's traceback).
_STDERR_TAIL_BYTES = 8192


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    stderr_tail: asyncio.Task[bytes]
    documents: int = 0


@dataclass(frozen=True, slots=True)
class _Ended:
    returncode: int
    killed: bool
    last_stderr_line: str


class ExtractionWorker:
    """Extracts documents one at a time in a child process that it starts and replaces."""

    def __init__(self, *, memory_bytes: int, max_documents: int) -> None:
        if max_documents < 1:
            raise ValueError("max_documents must be at least 1")
        self._memory_bytes = memory_bytes
        self._max_documents = max_documents
        self._lock = asyncio.Lock()
        self._child: _Child | None = None

    @property
    def pid(self) -> int | None:
        """The process id of the current child; None when none is running."""
        return self._child.process.pid if self._child is not None else None

    async def extract(
        self,
        data: bytes,
        content_type: str,
        *,
        max_decompressed_bytes: int,
        max_chars: int,
        timeout_s: float,
    ) -> ExtractedText:
        """extract_text in the child; ExtractionError also when a limit is exceeded.

        The time limit covers all the document waits for, starting a child when one is
        needed. OSError (a child cannot be started) is the platform's failure and
        propagates.
        """
        header = protocol.request_header(
            content_type=content_type,
            max_decompressed_bytes=max_decompressed_bytes,
            max_chars=max_chars,
            length=len(data),
        )
        async with self._lock:
            try:
                async with asyncio.timeout(timeout_s):
                    child = await self._ready_child()
                    body = await _exchange(child, header, data)
            except TimeoutError:
                await self._end(kill=True, why="time limit")
                raise ExtractionError(
                    f"extracting the text took longer than the time limit of {timeout_s:g} s "
                    "(EXTRACTION_TIMEOUT_S); the file may be malformed or built to be slow "
                    "to parse"
                ) from None
            except BaseException:
                await self._end(kill=True, why="interrupted")
                raise
            outcome = protocol.parse_reply(body) if body is not None else None
            if outcome is None:
                ended = await self._end(kill=body is not None, why="no readable reply")
                raise ExtractionError(self._crash_reason(ended))
            if "memory" in outcome:
                await self._end(kill=False, why="memory")
                raise ExtractionError(_over_memory(self._memory_bytes))
            if child.documents >= self._max_documents:
                await self._end(kill=False, why="documents")
            if "error" in outcome:
                raise ExtractionError(str(outcome["error"]))
            return protocol.extracted_from(outcome["ok"])

    async def aclose(self) -> None:
        """Stop the child, if any (shutdown); a later `extract` starts a new one."""
        async with self._lock:
            await self._end(kill=False, why="closed")

    async def _ready_child(self) -> _Child:
        if self._child is not None and self._child.process.returncode is not None:
            # It died between documents (the OOM killer, a signal): not this one's fault.
            await self._end(kill=False, why="died while idle")
        if self._child is None:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                CHILD_MODULE,
                str(self._memory_bytes),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert process.stderr is not None
            tail = asyncio.create_task(_tail(process.stderr), name="extraction-child-stderr")
            self._child = _Child(process=process, stderr_tail=tail)
        return self._child

    async def _end(self, *, kill: bool, why: str) -> _Ended | None:
        """Stop the child (killed, or told to stop by closing its stdin) and reap it."""
        child, self._child = self._child, None
        if child is None:
            return None
        process = child.process
        killed = False
        if kill and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
                killed = True
        elif process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), _EXIT_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
                killed = True
            await process.wait()
        try:
            stderr = await asyncio.wait_for(child.stderr_tail, _EXIT_GRACE_S)
        except TimeoutError:
            stderr = b""
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        log.info(
            "extraction_child_ended",
            pid=process.pid,
            documents=child.documents,
            why=why,
            returncode=process.returncode,
        )
        return _Ended(
            returncode=process.returncode or 0,
            killed=killed,
            last_stderr_line=lines[-1] if lines else "",
        )

    def _crash_reason(self, ended: _Ended | None) -> str:
        if ended is not None and "MemoryError" in ended.last_stderr_line:
            return _over_memory(self._memory_bytes)
        code = ended.returncode if ended is not None else 0
        if ended is not None and ended.killed:
            how = "an unreadable reply"
        elif code < 0:
            how = f"signal {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        return (
            f"the text extraction process failed ({how}); it may have exceeded the memory "
            f"limit of {_mib(self._memory_bytes)} (EXTRACTION_MEMORY_BYTES)"
        )


async def _exchange(child: _Child, header: bytes, data: bytes) -> bytes | None:
    """Send one document, return the reply's body; None when the child ended without one."""
    stdin, stdout = child.process.stdin, child.process.stdout
    assert stdin is not None
    assert stdout is not None
    child.documents += 1
    try:
        stdin.write(header)
        stdin.write(data)
        await stdin.drain()
    except ConnectionError:
        pass  # It stopped reading: its reply, or its end, says why.
    try:
        length = int(await stdout.readline())
        return await stdout.readexactly(length)
    except (ValueError, asyncio.IncompleteReadError):
        return None


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """Read the stream to its end (a full pipe would block the child); keep its end."""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-_STDERR_TAIL_BYTES:]
    return tail


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _over_memory(memory_bytes: int) -> str:
    return (
        f"extracting the text needed more memory than the limit of {_mib(memory_bytes)} "
        "(EXTRACTION_MEMORY_BYTES)"
    )
