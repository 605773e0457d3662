"""Graceful shutdown: tell streams in flight that the process is going away.

uvicorn, on SIGTERM, stops accepting connections and waits (up to its graceful timeout)
for requests in flight before it runs the lifespan's shutdown. A streamed answer can
take longer than that wait, and a stream cut off by uvicorn's final cancellation ends
without a word to the client. So the app hooks SIGTERM and SIGINT too: the handler only
sets `draining` and then calls uvicorn's own handler. Each answer stream then has
SHUTDOWN_STREAM_GRACE_S to finish; one still running is ended with an `error` event
(`server_shutdown`) after its `AnswerFailed` is in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Put into each registered stream's queue when draining starts.
DRAIN = object()

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class ShutdownSignal:
    """Set once the process has been asked to stop; streams watch it."""

    def __init__(self) -> None:
        self.draining = asyncio.Event()
        self.streams: set[asyncio.Queue[Any]] = set()
        self._previous: dict[int, _Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> None:
        """Start draining (from a signal, or directly in tests)."""
        if not self.draining.is_set():
            log.info("shutdown_draining", streams=len(self.streams))
            self.draining.set()
            for queue in self.streams:
                queue.put_nowait(DRAIN)

    def install(self) -> None:
        """Chain a handler in front of the current SIGTERM and SIGINT handlers.

        Only in the main thread (signal handlers cannot be set elsewhere); an app run
        in a test's thread or loop simply never drains by signal.
        """
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                self._previous.pop(sig, None)

    def uninstall(self) -> None:
        """Put back the handlers that were there before `install` (if still ours)."""
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                if signal.getsignal(sig) == self._handle:
                    signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            # Nobody else was listening: behave as the default would, but through Python
            # so that `finally` blocks and atexit still run.
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
