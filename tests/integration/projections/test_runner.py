"""The runner: exactly-once effects, isolation of failures, resume, rebuild, one consumer."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import select, text

from ragledger.events import store
from ragledger.events.envelope import NewEvent
from ragledger.models.ledger import SubscriberCheckpoint
from ragledger.models.streams import StreamRow
from ragledger.projections.runner import (
    RunnerConfig,
    SubscriberRunner,
    reset_projection,
    run_until_caught_up,
)
from ragledger.projections.streams import StreamsProjection
from ragledger.services.subscriber_status import subscriber_statuses
from tests.integration.projections.support import (
    RecordingProjection,
    append_numbered,
    create_effects_table,
    effects,
)

FAST = RunnerConfig(
    batch_size=7,
    poll_interval_s=0.2,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    standby_retry_s=0.1,
)


async def _checkpoint(db, name: str) -> SubscriberCheckpoint | None:
    async with db.sessionmaker() as session:
        return await session.get(SubscriberCheckpoint, name)


async def _eventually(check: Callable[[], object], within_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if await check():  # type: ignore[misc]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _stream_rows(db) -> list[tuple]:
    async with db.sessionmaker() as session:
        rows = (await session.execute(select(StreamRow).order_by(StreamRow.stream_id))).scalars()
        return [
            (
                r.stream_id,
                r.category,
                r.version,
                r.event_count,
                r.first_position,
                r.last_position,
                r.last_event_type,
                r.created_at,
                r.updated_at,
            )
            for r in rows
        ]


async def test_runner_applies_each_event_once_and_wakes_on_notify(db) -> None:
    await create_effects_table(db.owner_engine)
    await append_numbered(db.sessionmaker, 25)
    # A long poll interval: only NOTIFY can make the later events arrive quickly.
    config = RunnerConfig(batch_size=7, poll_interval_s=30, standby_retry_s=0.1)
    runner = SubscriberRunner(db.engine, [RecordingProjection()], config)
    task = asyncio.create_task(runner.run())
    try:
        await _eventually(lambda: _has(db, "recording", 25))
        await append_numbered(db.sessionmaker, 5, stream="later")
        await _eventually(lambda: _has(db, "recording", 30), within_s=5)
    finally:
        runner.stop()
        await task
    assert await effects(db.engine, "recording") == list(range(1, 31))
    assert (await _checkpoint(db, "recording")).position == 30


async def _has(db, name: str, count: int) -> bool:
    return len(await effects(db.engine, name)) >= count


async def test_failure_inside_the_batch_rolls_back_and_retries_exactly_once(db) -> None:
    await create_effects_table(db.owner_engine)
    await append_numbered(db.sessionmaker, 20)
    flaky = RecordingProjection("flaky", fail_at=10, fail_times=3)
    runner = SubscriberRunner(db.engine, [flaky], FAST)
    task = asyncio.create_task(runner.run())
    try:
        await _eventually(lambda: _checkpoint_at(db, "flaky", 20))
    finally:
        runner.stop()
        await task
    assert flaky.failures == 3
    assert await effects(db.engine, "flaky") == list(range(1, 21))
    checkpoint = await _checkpoint(db, "flaky")
    assert (checkpoint.last_error, checkpoint.failing_position, checkpoint.failures) == (
        None,
        None,
        0,
    )


async def _checkpoint_at(db, name: str, position: int) -> bool:
    checkpoint = await _checkpoint(db, name)
    return checkpoint is not None and checkpoint.position >= position


async def test_a_failing_subscriber_stops_only_itself_and_resumes_at_the_failing_event(db) -> None:
    await create_effects_table(db.owner_engine)
    await append_numbered(db.sessionmaker, 30)
    broken = RecordingProjection("broken", fail_at=12)
    healthy = RecordingProjection("healthy")
    runner = SubscriberRunner(db.engine, [broken, healthy], FAST)
    task = asyncio.create_task(runner.run())
    try:
        await _eventually(lambda: _checkpoint_at(db, "healthy", 30))
        await _eventually(lambda: _failing(db, "broken"))
        checkpoint = await _checkpoint(db, "broken")
        assert checkpoint.position < 12
        assert checkpoint.failing_position == 12
        assert "boom at 12" in checkpoint.last_error
        async with db.sessionmaker() as session:
            statuses = {s.name: s for s in await subscriber_statuses(session, [broken, healthy])}
        assert statuses["healthy"].lag == 0
        assert statuses["broken"].lag > 0
        assert statuses["broken"].failing_position == 12

        broken.fail_at = None  # the bug is fixed; it resumes at the failing event
        await _eventually(lambda: _checkpoint_at(db, "broken", 30))
    finally:
        runner.stop()
        await task
    assert await effects(db.engine, "broken") == list(range(1, 31))
    assert await effects(db.engine, "healthy") == list(range(1, 31))


async def _failing(db, name: str) -> bool:
    checkpoint = await _checkpoint(db, name)
    return checkpoint is not None and checkpoint.failures >= 2


@pytest.mark.slow
async def test_killing_the_process_mid_batch_loses_nothing_and_applies_nothing_twice(
    db, database_url: str
) -> None:
    await create_effects_table(db.owner_engine)
    await append_numbered(db.sessionmaker, 47)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.projections.crash_worker",
        database_url,
        "25",
        cwd=os.getcwd(),
    )
    assert await asyncio.wait_for(proc.wait(), timeout=60) == -signal.SIGKILL
    # Batches of 10: 1..20 committed; 21..25 were written inside the killed transaction.
    assert await effects(db.engine, "crashy") == list(range(1, 21))
    assert (await _checkpoint(db, "crashy")).position == 20

    assert await run_until_caught_up(db.engine, RecordingProjection("crashy"), batch_size=10)
    assert await effects(db.engine, "crashy") == list(range(1, 48))
    assert (await _checkpoint(db, "crashy")).position == 47


async def test_rebuild_reproduces_the_live_read_model(db) -> None:
    async with db.sessionmaker() as session, session.begin():
        for i in range(12):
            await store.append(session, f"document-{i % 3}", [NewEvent("Touched", {"i": i})])
    runner = SubscriberRunner(db.engine, [StreamsProjection()], FAST)
    task = asyncio.create_task(runner.run())
    try:
        await _eventually(lambda: _checkpoint_at(db, "streams", 12))
        async with db.sessionmaker() as session, session.begin():
            await store.append(session, "user-1", [NewEvent("Registered", {})])
        await _eventually(lambda: _checkpoint_at(db, "streams", 13))
    finally:
        runner.stop()
        await task
    live = await _stream_rows(db)
    assert [(r[0], r[2], r[3]) for r in live] == [
        ("document-0", 4, 4),
        ("document-1", 4, 4),
        ("document-2", 4, 4),
        ("user-1", 1, 1),
    ]

    projection = StreamsProjection()
    await reset_projection(db.engine, projection)
    assert await _stream_rows(db) == []
    assert await run_until_caught_up(db.engine, projection, batch_size=5)
    assert await _stream_rows(db) == live


async def test_two_runners_one_consumer_and_the_standby_takes_over(db) -> None:
    await create_effects_table(db.owner_engine)
    await append_numbered(db.sessionmaker, 20)
    first = SubscriberRunner(db.engine, [RecordingProjection("shared")], FAST)
    second = SubscriberRunner(db.engine, [RecordingProjection("shared")], FAST)
    first_task = asyncio.create_task(first.run())
    await _eventually(lambda: _active(first))
    second_task = asyncio.create_task(second.run())
    try:
        await _eventually(lambda: _checkpoint_at(db, "shared", 20))
        await asyncio.sleep(0.3)  # several standby retries
        assert first.active == {"shared"}
        assert second.active == set()
        # The rebuild helper cannot consume while another process holds the subscriber.
        assert not await run_until_caught_up(db.engine, RecordingProjection("shared"))

        first.stop()
        await first_task
        await append_numbered(db.sessionmaker, 10, stream="after")
        await _eventually(lambda: _checkpoint_at(db, "shared", 30))
        assert second.active == {"shared"}
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(first_task, second_task)
    assert await effects(db.engine, "shared") == list(range(1, 31))


async def _active(runner: SubscriberRunner) -> bool:
    return bool(runner.active)


async def test_checkpoint_rows_are_not_visible_as_ledger_changes(db) -> None:
    """The runner writes only its checkpoint and effects; the ledger is untouched."""
    await append_numbered(db.sessionmaker, 3)
    assert await run_until_caught_up(db.engine, StreamsProjection())
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM events")) == 3


class _Handles(RecordingProjection):
    """A recording projection that handles only the given event types."""

    def __init__(self, name: str, *types: str) -> None:
        super().__init__(name)
        self.event_types = frozenset(types)  # type: ignore[misc]


async def _append_typed(db, event_type: str, count: int) -> None:
    async with db.sessionmaker() as session, session.begin():
        await store.append(session, "typed", [NewEvent(event_type, {"n": n}) for n in range(count)])


async def test_a_notify_wakes_only_the_subscribers_that_handle_what_arrived(db) -> None:
    """Events of a type a subscriber ignores cost it no transaction until its next poll."""
    await create_effects_table(db.owner_engine)
    # A long poll interval: a checkpoint that moves was moved by a NOTIFY's wake-up.
    config = RunnerConfig(batch_size=7, poll_interval_s=30, standby_retry_s=0.1)
    runner = SubscriberRunner(
        db.engine, [_Handles("numbers", "Numbered"), _Handles("letters", "Lettered")], config
    )
    task = asyncio.create_task(runner.run())

    async def started() -> bool:
        # Both consumers looked once at the empty ledger and the listener knows its head.
        checkpoints = [await _checkpoint(db, "numbers"), await _checkpoint(db, "letters")]
        return runner.listener_ready and all(checkpoints)

    try:
        await _eventually(started)
        await _append_typed(db, "Numbered", 5)
        await _eventually(lambda: _has(db, "numbers", 5), within_s=5)
        await asyncio.sleep(0.5)
        assert (await _checkpoint(db, "letters")).position == 0
        await _append_typed(db, "Lettered", 2)
        await _eventually(lambda: _has(db, "letters", 2), within_s=5)
        await asyncio.sleep(0.5)
        assert (await _checkpoint(db, "letters")).position == 7
        assert (await _checkpoint(db, "numbers")).position == 5
    finally:
        runner.stop()
        await task
    assert await effects(db.engine, "numbers") == [1, 2, 3, 4, 5]
    assert await effects(db.engine, "letters") == [6, 7]


async def test_an_ignored_event_is_passed_at_the_next_poll(db) -> None:
    """The lag a skipped wake-up leaves lasts at most one poll interval."""
    await create_effects_table(db.owner_engine)
    config = RunnerConfig(batch_size=7, poll_interval_s=0.5, standby_retry_s=0.1)
    runner = SubscriberRunner(db.engine, [_Handles("letters", "Lettered")], config)
    task = asyncio.create_task(runner.run())
    try:
        await _eventually(lambda: _checkpoint(db, "letters"))
        await _append_typed(db, "Numbered", 3)

        async def passed() -> bool:
            return (await _checkpoint(db, "letters")).position == 3

        await _eventually(passed, within_s=5)
    finally:
        runner.stop()
        await task
    assert await effects(db.engine, "letters") == []


_LISTENER_PID = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND (query LIKE 'LISTEN %' "
    "OR query LIKE 'SELECT coalesce(max(position), 0) FROM events%' "
    "OR query LIKE 'SELECT DISTINCT event_type FROM events%')"
)


async def test_the_listener_comes_back_after_its_connection_is_killed(db) -> None:
    """A dropped listener reconnects, and NOTIFY wakes the consumers again."""
    await create_effects_table(db.owner_engine)
    config = RunnerConfig(
        batch_size=7, poll_interval_s=30, backoff_initial_s=0.05, standby_retry_s=0.1
    )
    runner = SubscriberRunner(db.engine, [RecordingProjection()], config)
    task = asyncio.create_task(runner.run())

    async def listener_pids() -> list[int]:
        async with db.owner_engine.connect() as conn:
            return list((await conn.scalars(_LISTENER_PID)).all())

    try:

        async def listening() -> bool:
            started = runner.listener_ready and await _checkpoint(db, "recording")
            return bool(started) and len(await listener_pids()) == 1

        await _eventually(listening)
        (old,) = await listener_pids()
        async with db.owner_engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old})

        async def listening_again() -> bool:
            return await listening() and (await listener_pids()) != [old]

        await _eventually(listening_again, within_s=5)
        await append_numbered(db.sessionmaker, 3)
        # The poll is 30 s away: only the new listener's NOTIFY brings these in time.
        await _eventually(lambda: _has(db, "recording", 3), within_s=5)
    finally:
        runner.stop()
        await task
    assert await effects(db.engine, "recording") == [1, 2, 3]
