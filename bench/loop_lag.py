"""How late the event loop runs while the platform's blocking work is under way.

The tests check deterministically that this work runs on worker threads
(`tests/off_loop.py`); this benchmark measures what that buys: the worst lateness of a
ticker sleeping 10 ms at a time on the loop while the work runs, next to the same
ticker's lateness on an idle loop for as long, in one run:

- embedding 200 policy-like texts with the default backend (`Embedder.embed`);
- three argon2 password checks at once (`verify_password`, as a login does);
- streaming an answer from the local model (skipped with --quick: it loads SmolLM2).

A blocking piece of work on the loop would show up as a lateness as long as that piece
(a whole argon2 check, ~0.1 s; a whole batch's forward pass).

    uv run python bench/loop_lag.py            # all three
    uv run python bench/loop_lag.py --quick    # embedding and argon2 only

It prints a table and writes ``bench/results/loop_lag.json``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import argument_parser, fmt, machine_info, report
from loop_lag_probe import loop_lag_during

from ragledger.core.settings import Settings
from ragledger.services.embedding import get_embedder
from ragledger.services.users import hash_password, verify_password

PASSWORD = "correct horse battery staple"
OUTPUT = Path(__file__).resolve().parent / "results" / "loop_lag.json"
TEXTS = [
    f"Policy {i}: employees submit travel expenses within {i % 30 + 1} days, with receipts, "
    f"to the finance team of region {i % 7}; late claims need a manager's approval."
    for i in range(200)
]


async def _case(name: str, work: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """The ticker's worst lateness during `work`, and on an idle loop for as long."""
    started = time.perf_counter()
    busy = await loop_lag_during(work())
    work_s = time.perf_counter() - started
    idle = await loop_lag_during(asyncio.sleep(work_s))
    return {
        "work": name,
        "work_s": round(work_s, 2),
        "max_lag_ms": round(busy.max_lag_s * 1000, 1),
        "wakeups": busy.wakeups,
        "idle_max_lag_ms": round(idle.max_lag_s * 1000, 1),
        "idle_wakeups": idle.wakeups,
    }


async def _stream_local_answer() -> list[str]:
    import litellm

    from ragledger.services.local_llm import LOCAL_LLM_MODEL

    response = await litellm.acompletion(
        model=LOCAL_LLM_MODEL,
        messages=[{"role": "user", "content": "Why is the sky blue? One sentence."}],
        max_tokens=40,
        stream=True,
    )
    return [chunk async for chunk in response]


async def run(quick: bool) -> dict[str, Any]:
    """Measure each case; the local model only without `quick`."""
    started = time.perf_counter()
    machine = machine_info()
    cases = []
    with tempfile.TemporaryDirectory(prefix="ragledger-bench-lag-") as data_dir:
        settings = Settings(data_dir=Path(data_dir))
        embedder = get_embedder(settings)
        await embedder.warm_up()
        await embedder.embed(TEXTS[:8])  # first pass compiles what later ones reuse
        cases.append(await _case("embed 200 texts", lambda: embedder.embed(TEXTS)))
        hashed = await hash_password(PASSWORD)
        cases.append(
            await _case(
                "3 argon2 checks",
                lambda: asyncio.gather(*(verify_password(PASSWORD, hashed) for _ in range(3))),
            )
        )
        await embedder.aclose()
        if not quick:
            from ragledger.services.local_llm import (
                close_local_llm,
                get_local_llm,
                register_local_llm,
            )

            llm_settings = Settings(
                data_dir=Path(data_dir), llm_model="ragledger-local/smollm2-135m-instruct"
            )
            register_local_llm(llm_settings)
            await get_local_llm(llm_settings).warm_up()
            cases.append(await _case("local LLM stream", _stream_local_answer))
            await close_local_llm()
    return {
        "benchmark": "loop_lag",
        "machine": machine,
        "quick": quick,
        "cases": cases,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def table(results: dict[str, Any]) -> str:
    """Each case: the loop's worst lateness during the work and on an idle loop."""
    lines = [
        f"load at start {results['machine']['load_average_at_start']}",
        f"{'work':<18} {'work s':>7} {'max lag ms':>11} {'idle max lag ms':>16} {'ratio':>6}",
    ]
    for case in results["cases"]:
        busy, idle = case["max_lag_ms"], case["idle_max_lag_ms"]
        ratio = busy / idle if idle else None
        lines.append(
            f"{case['work']:<18} {fmt(case['work_s'], '.2f'):>7} {fmt(busy):>11} "
            f"{fmt(idle):>16} {fmt(ratio):>6}"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write its results."""
    parser = argument_parser(__doc__ or "", quick_help="skip the local model", output=OUTPUT)
    args = parser.parse_args()
    results = asyncio.run(run(args.quick))
    report(results, table(results), args.output)


if __name__ == "__main__":
    main()
