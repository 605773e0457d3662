"""The FastAPI application factory and its lifespan (database, migrations, runner)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from ragledger.api.middleware import RequestContextMiddleware
from ragledger.api.routes import health
from ragledger.core.embedded_postgres import release_embedded_postgres
from ragledger.core.logging import configure_logging
from ragledger.core.runtime import open_database
from ragledger.core.settings import Settings, get_settings
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import RunnerConfig, SubscriberRunner

log = structlog.get_logger(__name__)


def runner_config(settings: Settings) -> RunnerConfig:
    """The runner's timing from settings."""
    return RunnerConfig(
        batch_size=settings.runner_batch_size,
        poll_interval_s=settings.runner_poll_interval_s,
        backoff_initial_s=settings.runner_backoff_initial_s,
        backoff_max_s=settings.runner_backoff_max_s,
        standby_retry_s=settings.runner_standby_retry_s,
    )


def create_app(settings: Settings | None = None, *, run_subscribers: bool | None = None) -> FastAPI:
    """Build the app; with `run_subscribers` the lifespan also runs the subscriber runner."""
    settings = settings or get_settings()
    if run_subscribers is None:
        run_subscribers = settings.run_subscribers

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = await open_database(settings)
        app.state.settings = settings
        app.state.database = database
        runner: SubscriberRunner | None = None
        runner_task: asyncio.Task[None] | None = None
        if run_subscribers:
            runner = SubscriberRunner(database.engine, all_subscribers(), runner_config(settings))
            runner_task = asyncio.create_task(runner.run(), name="subscriber-runner")
        log.info("app_started", runner=run_subscribers)
        try:
            yield
        finally:
            if runner is not None and runner_task is not None:
                runner.stop()
                await runner_task
            await database.dispose()
            if settings.uses_embedded_database:
                await asyncio.to_thread(release_embedded_postgres)
            log.info("app_stopped")

    app = FastAPI(
        title="ragledger",
        version="0.1.0",
        summary="Event-sourced, audit-first retrieval-augmented answers.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router, prefix="/api/v1")
    return app


def create_default_app() -> FastAPI:
    """Factory for `uvicorn --factory` (reads settings from the environment)."""
    settings = get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return create_app(settings)
