"""One daemon worker thread as a `concurrent.futures.Executor`, for the local models.

`ThreadPoolExecutor` threads are joined when the interpreter exits, so a model load
in progress (the local LLM's first start dequantizes its GGUF for tens of seconds)
held up the exit of a process told to stop. This worker is a daemon thread: shutdown
may leave a job running, and the process exits without waiting for it. The jobs it
runs only load weights, compute, and publish caches atomically (write, then rename),
so abandoning one loses nothing but the work.

A daemon thread abandoned mid-job can still hold an import lock (the model load imports
torch and transformers lazily), and the interpreter's finalization deadlocks on it when
a destructor imports. `busy_workers()` lets a process that is ending see that case and
end without finalization (see `ragledger serve`).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = object()
_workers: weakref.WeakSet[DaemonWorker] = weakref.WeakSet()


def busy_workers() -> list[str]:
    """Names of the daemon workers running a job at this moment."""
    return sorted(worker.name for worker in list(_workers) if worker.busy)


class DaemonWorker(Executor):
    """Runs submitted callables one at a time, in order, on one daemon thread."""

    def __init__(
        self,
        *,
        name: str,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._initializer = initializer
        self._initargs = initargs
        self._busy = False
        self.name = name
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        _workers.add(self)

    @property
    def busy(self) -> bool:
        """Whether a job is running on the thread now."""
        return self._busy and self._thread.is_alive()

    def submit[T](self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue fn(*args, **kwargs); RuntimeError once shut down."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._jobs.put((future, fn, args, kwargs))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; optionally cancel queued ones and wait for the running one."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    self._cancel_queued()
                self._jobs.put(_STOP)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _cancel_queued(self) -> None:
        pending = []
        while True:
            try:
                pending.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        for item in pending:
            if item is not _STOP:
                item[0].cancel()

    def _work(self) -> None:
        broken: BaseException | None = None
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:  # noqa: BLE001  (every job then fails with it)
                broken = exc
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            if broken is not None:
                future.set_exception(RuntimeError(f"the worker failed to start: {broken!r}"))
                continue
            self._busy = True
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  (handed to whoever awaits it)
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                self._busy = False
