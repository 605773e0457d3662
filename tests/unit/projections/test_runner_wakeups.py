"""The runner's wake-ups: a NOTIFY for a head a consumer has passed costs no transaction."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ragledger.projections.runner import RunnerConfig, SubscriberRunner


@dataclass
class _Named:
    name: str


def _runner(poll_s: float = 30.0) -> SubscriberRunner:
    config = RunnerConfig(poll_interval_s=poll_s, coalesce_s=0.0)
    return SubscriberRunner(engine=None, subscribers=[_Named("a"), _Named("b")], config=config)  # type: ignore[arg-type]


async def _still_waiting(task: asyncio.Task[None]) -> bool:
    await asyncio.sleep(0.05)
    return not task.done()


async def test_a_notify_for_a_passed_head_keeps_the_consumer_waiting() -> None:
    runner = _runner()
    waiting = asyncio.create_task(runner.wait_for_news("a", position=10))
    runner.on_notify(None, 1, "ragledger_events", "9")
    runner.on_notify(None, 1, "ragledger_events", "10")
    assert await _still_waiting(waiting)
    runner.on_notify(None, 1, "ragledger_events", "11")
    await asyncio.wait_for(waiting, timeout=1)


async def test_a_reconnected_listener_makes_every_consumer_look() -> None:
    runner = _runner()
    a = asyncio.create_task(runner.wait_for_news("a", position=10))
    b = asyncio.create_task(runner.wait_for_news("b", position=10))
    assert await _still_waiting(a)
    runner.on_notify()  # what the listener does after (re)connecting: no payload
    await asyncio.wait_for(asyncio.gather(a, b), timeout=1)


async def test_the_poll_interval_ends_the_wait_without_any_notify() -> None:
    runner = _runner(poll_s=0.1)
    await asyncio.wait_for(runner.wait_for_news("a", position=10), timeout=1)


async def test_stop_ends_the_wait() -> None:
    runner = _runner()
    waiting = asyncio.create_task(runner.wait_for_news("a", position=10))
    assert await _still_waiting(waiting)
    runner.stop()
    await asyncio.wait_for(waiting, timeout=1)


async def test_a_malformed_payload_is_treated_as_a_reason_to_look() -> None:
    runner = _runner()
    waiting = asyncio.create_task(runner.wait_for_news("a", position=10))
    runner.on_notify(None, 1, "ragledger_events", "not-a-position")
    await asyncio.wait_for(waiting, timeout=1)


@dataclass
class _Spaced:
    name: str
    min_batch_interval_s: float


async def test_a_minimum_batch_interval_defers_a_busy_subscriber_not_a_quiet_one() -> None:
    config = RunnerConfig(poll_interval_s=30.0, coalesce_s=0.0)
    runner = SubscriberRunner(
        engine=None,  # type: ignore[arg-type]
        subscribers=[_Spaced("tree", 1.0), _Named("other")],
        config=config,
    )
    loop = asyncio.get_running_loop()
    # The tree's last batch began just now: news wakes it only 1 s after that batch.
    began = loop.time()
    tree = asyncio.create_task(
        runner.wait_for_news("tree", position=10, last_batch_at=time.monotonic())
    )
    other = asyncio.create_task(
        runner.wait_for_news("other", position=10, last_batch_at=time.monotonic())
    )
    runner.on_notify(None, 1, "ragledger_events", "11")
    await asyncio.wait_for(other, timeout=0.5)
    assert not tree.done()
    await asyncio.wait_for(tree, timeout=2)
    assert loop.time() - began >= 0.9
    # A batch long ago: the next news is taken at once.
    quiet = asyncio.create_task(
        runner.wait_for_news("tree", position=11, last_batch_at=time.monotonic() - 5)
    )
    runner.on_notify(None, 1, "ragledger_events", "12")
    await asyncio.wait_for(quiet, timeout=0.5)
