"""Where blocking work ran: a spy that wraps a real callable and records its calling thread.

Blocking work (a forward pass, an argon2 check, a model load) must run on a worker
thread, never on the thread that runs the event loop. Whether it did is a fact about
each call, checked here deterministically; how late the loop was meanwhile is a timing,
measured by `bench/loop_lag.py` and never asserted in a test.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass(frozen=True, slots=True)
class Call:
    """One call of the spied callable: its thread, and whether that thread runs a loop."""

    thread: str
    on_event_loop: bool


@dataclass(slots=True)
class CallSpy:
    """The calls seen so far (appended from whatever thread made them)."""

    calls: list[Call] = field(default_factory=list)

    @property
    def all_off_the_loop(self) -> bool:
        """At least one call was seen, and none ran on a thread running an event loop."""
        return bool(self.calls) and not any(call.on_event_loop for call in self.calls)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def spy_on(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> CallSpy:
    """Replace `owner.name` (a class's method or an object's attribute) by a recording wrapper.

    The wrapper calls the original with the same arguments: behaviour is unchanged.
    """
    original: Callable[..., Any] = getattr(owner, name)
    spy = CallSpy()

    @functools.wraps(original)
    def recording(*args: Any, **kwargs: Any) -> Any:
        spy.calls.append(Call(threading.current_thread().name, _on_event_loop()))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return spy
