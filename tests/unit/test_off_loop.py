"""The off-the-loop spy tells a call on the loop's thread from one on a worker thread."""

from __future__ import annotations

import asyncio

import pytest

from tests.off_loop import spy_on


class _Work:
    def crunch(self, n: int) -> int:
        return n + 1


async def test_the_spy_sees_which_calls_ran_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = _Work()
    spy = spy_on(monkeypatch, work, "crunch")
    assert spy.all_off_the_loop is False  # no call seen yet proves nothing

    assert await asyncio.to_thread(work.crunch, 1) == 2
    assert spy.all_off_the_loop is True
    assert work.crunch(2) == 3  # on the loop's own thread
    assert [call.on_event_loop for call in spy.calls] == [False, True]
    assert spy.all_off_the_loop is False
