"""`ragledger runner`: the subscriber runner and the scheduled jobs, without the API."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import structlog
import typer

from ragledger.cli._common import command_settings, with_database
from ragledger.core.runtime import Database

log = structlog.get_logger(__name__)


def run_runner(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port (default: none)."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Bind address of the metrics port (keep it private).")
    ] = "127.0.0.1",
) -> None:
    """Run only the subscriber runner and the daily digest (beside `serve --no-runner`).

    Start two or more: each subscriber has one active consumer at a time (a PostgreSQL
    advisory lock); the others stand by and take over when it stops or dies. SIGTERM
    lets each consumer commit or roll back its batch, then exits.
    """
    from prometheus_client import start_http_server

    from ragledger.core.metrics import monitor_event_loop_lag
    from ragledger.projections.registry import all_subscribers
    from ragledger.projections.runner import SubscriberRunner, runner_config
    from ragledger.projections.subscriber_alerts import watch_subscribers
    from ragledger.services.interrupted_answers import sweep_interrupted_answers
    from ragledger.services.ledger_audit import scheduled_digests
    from ragledger.services.signing import DigestSigner
    from ragledger.services.tree_heads import scheduled_tree_heads

    settings = command_settings(service=True)
    if metrics_port is not None:
        start_http_server(metrics_port, addr=metrics_host)

    async def work(database: Database) -> None:
        runner = SubscriberRunner(
            database.engine, all_subscribers(settings), runner_config(settings)
        )
        signer = DigestSigner.from_settings(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        background = [
            asyncio.create_task(scheduled_digests(database.sessionmaker, signer, settings)),
            asyncio.create_task(sweep_interrupted_answers(database.sessionmaker, settings)),
            asyncio.create_task(watch_subscribers(database.sessionmaker, settings)),
            asyncio.create_task(scheduled_tree_heads(database.sessionmaker, signer, settings)),
            asyncio.create_task(monitor_event_loop_lag()),
        ]
        try:
            await runner.run()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            log.info("runner_stopped")

    with_database(work, settings=settings)
