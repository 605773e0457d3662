"""Work a request starts and does not wait for (the answer is sent first).

Starlette's BackgroundTasks run after the response too, but inside the request's
ASGI call, so a client (or a test through ASGITransport) cannot tell them from the
request itself. These are plain tasks of the process, held until done, and awaited
(for a bounded time) when the app shuts down so that none is cut off silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class BackgroundWork:
    """The tasks in flight, kept referenced until they finish."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Start `work` now; its failure is logged, never raised into a request."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("background_work_failed", task=task.get_name(), error=repr(error))

    async def wait_idle(self) -> None:
        """Return once no task is in flight (tests; shutdown uses `aclose`)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the tasks in flight, then cancel the rest."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            log.warning("background_work_cancelled", task=task.get_name())
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
