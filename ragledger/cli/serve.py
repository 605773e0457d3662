"""`ragledger serve`: the HTTP API (and the subscriber runner) under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import structlog
import typer
import uvicorn

from ragledger.cli._common import command_settings, with_database
from ragledger.core.embedded_postgres import release_embedded_postgres
from ragledger.core.settings import Settings, get_settings
from ragledger.core.worker_thread import busy_workers

log = structlog.get_logger(__name__)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _end_now_if_workers_busy(code: object) -> None:
    """End the process without interpreter finalization while a model job still runs.

    A warm-up abandoned at shutdown keeps loading on its daemon thread, which may hold
    an import lock (torch and transformers import lazily); a destructor that imports
    during finalization then waits for it forever (seen in CI with litellm's HTTP
    client). The server's shutdown has closed everything it owns by now; the embedded
    PostgreSQL is released here because atexit will not run.
    """
    busy = busy_workers()
    if not busy:
        return
    release_embedded_postgres()
    log.info("exit_without_finalization", busy_workers=busy)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (1 if code else 0))


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """Give the workers one empty PROMETHEUS_MULTIPROC_DIR (their metrics are summed)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(directory) if directory else settings.data_dir / "prometheus"
    path.mkdir(parents=True, exist_ok=True)
    # Files of a previous run would add its counts to this one's.
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST setting).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT setting).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    runner: Annotated[
        bool, typer.Option("--runner/--no-runner", help="Run subscribers in the API process.")
    ] = True,
) -> None:
    """Serve the HTTP API (and, unless --no-runner, the subscriber runner)."""
    settings = command_settings(service=True)
    if workers > 1:
        if not settings.redis_url:
            # Each worker then counts (and windows security events) on its own: a limit
            # of N per minute lets N per worker through.
            log.warning(
                "rate_limits_per_process",
                workers=workers,
                detail=(
                    "REDIS_URL is not set: each worker keeps its own rate limits, so every "
                    "limit is multiplied by the number of workers; set REDIS_URL to share them"
                ),
            )
        _prepare_multiprocess_metrics(settings)
    # Migrate (or refuse) once here, before any worker starts.
    with_database(lambda _db: asyncio.sleep(0), settings=settings)
    os.environ["RUN_SUBSCRIBERS"] = "true" if runner else "false"
    # uvicorn restores this handler and re-raises the SIGTERM it handled; exiting through
    # SystemExit (not the default kill) lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    get_settings.cache_clear()
    try:
        uvicorn.run(
            "ragledger.api.app:create_default_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_config=None,
            # The request middleware logs each request (route, status, duration, request
            # id); uvicorn's access line would repeat it at a cost of ~1% of the CPU.
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=30,
            timeout_worker_healthcheck=settings.worker_healthcheck_timeout_s,
        )
    except SystemExit as exc:
        _end_now_if_workers_busy(exc.code)
        raise
    _end_now_if_workers_busy(0)
