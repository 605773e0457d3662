"""How late the event loop wakes a ticker while some work runs (used by bench/loop_lag.py).

The heap is frozen for the measurement (`gc.freeze`): in a test process holding torch,
transformers and litellm, one full garbage collection took 0.05-0.9 s (measured with a
gc callback over these tests), and one falling in the window at random made these
tests flaky. What they check is whether the work itself runs off the loop.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable
from dataclasses import dataclass

TICK_S = 0.01


@dataclass(frozen=True, slots=True)
class LoopLag[T]:
    """What the work returned, the loop's worst lateness meanwhile (s), and its wake-ups."""

    result: T
    max_lag_s: float
    wakeups: int


async def loop_lag_during[T](work: Awaitable[T]) -> LoopLag[T]:
    """Await `work` while a ticker sleeping TICK_S at a time records how late it wakes."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - before - TICK_S)

    gc.collect()
    gc.freeze()
    ticking = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        done.set()
        await ticking
        gc.unfreeze()
    return LoopLag(result, max(lags, default=0.0), len(lags))
