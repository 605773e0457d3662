"""Prometheus metrics: one definition per measured thing, observed at the edges.

Every process (API worker, runner) records into the default registry. With several
uvicorn workers, `PROMETHEUS_MULTIPROC_DIR` must be set before this module is imported
(`ragledger serve --workers N` does it) so that each worker writes its values to files
there and any worker's `/metrics` reports the sum over all of them.

Gauges describing shared state (ledger head, subscriber lag, anomaly counts) are read
from PostgreSQL when `/metrics` is scraped (see `refresh_database_gauges`), so they are
the same whichever process answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

NAMESPACE = "ragledger"

# Request latency: from sub-millisecond health checks to streamed answers of minutes.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

http_requests = Counter(
    "http_requests",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
)
http_request_duration = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response body (streams included).",
    ["method", "route", "status"],
    namespace=NAMESPACE,
    buckets=_HTTP_BUCKETS,
)
questions = Counter(
    "questions",
    "Questions by outcome: answered, no_context, or failed_<reason>.",
    ["outcome"],
    namespace=NAMESPACE,
)
llm_time_to_first_token = Histogram(
    "llm_time_to_first_token_seconds",
    "From sending the prompt to the first content token from the LLM.",
    ["model"],
    namespace=NAMESPACE,
    buckets=_LLM_BUCKETS,
)
llm_duration = Histogram(
    "llm_duration_seconds",
    "Whole LLM completion, first byte sent to last token received.",
    ["model"],
    namespace=NAMESPACE,
    buckets=_LLM_BUCKETS,
)
retrieval_duration = Histogram(
    "retrieval_duration_seconds",
    "Retrieval by stage: search (vector and full-text candidates, one statement) and fusion.",
    ["stage"],
    namespace=NAMESPACE,
    buckets=_FAST_BUCKETS,
)
embedding_batch_duration = Histogram(
    "embedding_batch_duration_seconds",
    "One embedding batch (a forward pass, or one call to a remote model).",
    ["model"],
    namespace=NAMESPACE,
    buckets=_FAST_BUCKETS,
)
ledger_appends = Counter(
    "ledger_events_appended",
    "Events this process inserted into the ledger (counted at the insert, so the events "
    "of a transaction rolled back afterwards are counted too).",
    ["event_type"],
    namespace=NAMESPACE,
)
rate_limit_rejections = Counter(
    "rate_limit_rejections",
    "Requests refused with 429, by limit.",
    ["scope"],
    namespace=NAMESPACE,
)
event_loop_lag = Histogram(
    "event_loop_lag_seconds",
    "How late a periodic timer fired on the event loop (time it was blocked).",
    namespace=NAMESPACE,
    buckets=_LAG_BUCKETS,
)
event_loop_lag_max = Gauge(
    "event_loop_lag_max_seconds",
    "The largest event-loop lag seen by this process since it started.",
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
ledger_head = Gauge(
    "ledger_head_position",
    "Position of the newest event in the ledger (read at scrape).",
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)
subscriber_lag_events = Gauge(
    "subscriber_lag_events",
    "Events between a subscriber's checkpoint and the ledger head (read at scrape).",
    ["subscriber"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)
subscriber_lag_seconds = Gauge(
    "subscriber_lag_seconds",
    "Age of the oldest event a subscriber has not yet applied; 0 when caught up.",
    ["subscriber"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)
subscriber_failures = Gauge(
    "subscriber_failures",
    "Consecutive failures of a subscriber on its current event (read at scrape).",
    ["subscriber"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)
anomalies = Gauge(
    "anomalies",
    "Anomalies detected, by rule, severity and whether an admin acknowledged them.",
    ["rule", "severity", "acknowledged"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)


@dataclass(frozen=True, slots=True)
class SubscriberLag:
    """One subscriber's distance behind the head, for the lag gauges."""

    name: str
    events: int
    seconds: float
    failures: int


@dataclass(frozen=True, slots=True)
class AnomalyCount:
    """Number of anomalies of one rule and severity."""

    rule: str
    severity: str
    acknowledged: bool
    count: int


def multiprocess_dir() -> str | None:
    """The directory of multi-process mode, or None in a single process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render_latest() -> tuple[bytes, str]:
    """The exposition text of every metric and its content type (multi-process aware)."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def set_database_gauges(
    head_position: int, lags: Sequence[SubscriberLag], counts: Sequence[AnomalyCount]
) -> None:
    """Publish what was read from PostgreSQL at scrape time."""
    ledger_head.set(head_position)
    for lag in lags:
        subscriber_lag_events.labels(lag.name).set(lag.events)
        subscriber_lag_seconds.labels(lag.name).set(lag.seconds)
        subscriber_failures.labels(lag.name).set(lag.failures)
    for count in counts:
        anomalies.labels(count.rule, count.severity, str(count.acknowledged).lower()).set(
            count.count
        )


def observe_event_loop_lag(lag_s: float, state: list[float]) -> None:
    """Record one lag sample; `state[0]` holds this process's maximum so far."""
    event_loop_lag.observe(lag_s)
    if lag_s > state[0]:
        state[0] = lag_s
        event_loop_lag_max.set(lag_s)


async def monitor_event_loop_lag(interval_s: float = 0.25) -> None:
    """Sleep `interval_s` forever and record how late each wake-up was."""
    state = [0.0]
    while True:
        expected = time.perf_counter() + interval_s
        await asyncio.sleep(interval_s)
        observe_event_loop_lag(max(time.perf_counter() - expected, 0.0), state)
