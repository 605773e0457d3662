"""Run a RecordingProjection in batches of 10 until it SIGKILLs itself at a position."""

from __future__ import annotations

import asyncio
import sys

from ragledger.core.database import create_engine
from ragledger.projections.runner import run_until_caught_up
from tests.integration.projections.support import RecordingProjection


async def main(url: str, kill_at: int) -> None:
    engine = create_engine(url, role="ragledger_app")
    await run_until_caught_up(engine, RecordingProjection("crashy", kill_at=kill_at), batch_size=10)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
