"""DaemonWorker: jobs in order on one daemon thread, and who is busy at exit."""

from __future__ import annotations

import threading

import pytest

from ragledger.core.worker_thread import DaemonWorker, busy_workers


def test_jobs_run_in_order_on_one_daemon_thread() -> None:
    worker = DaemonWorker(name="test-order")
    seen: list[tuple[int, str, bool]] = []

    def job(n: int) -> int:
        thread = threading.current_thread()
        seen.append((n, thread.name, thread.daemon))
        return n * 2

    futures = [worker.submit(job, n) for n in range(3)]
    assert [f.result(timeout=5) for f in futures] == [0, 2, 4]
    assert seen == [(0, "test-order", True), (1, "test-order", True), (2, "test-order", True)]
    worker.shutdown(wait=True)


def test_a_worker_is_busy_only_while_a_job_runs() -> None:
    worker = DaemonWorker(name="test-busy")
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    assert "test-busy" not in busy_workers()
    future = worker.submit(hold)
    assert started.wait(5)
    assert "test-busy" in busy_workers()
    release.set()
    future.result(timeout=5)
    assert "test-busy" not in busy_workers()
    worker.shutdown(wait=True)


def test_shutdown_refuses_new_jobs_and_cancels_queued_ones() -> None:
    worker = DaemonWorker(name="test-shutdown")
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(5)

    running = worker.submit(hold)
    assert started.wait(5)
    queued = worker.submit(lambda: "never")
    worker.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(lambda: None)
    release.set()
    assert running.result(timeout=5) is True
