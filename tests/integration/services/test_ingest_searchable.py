"""`ragledger ingest` says "indexed" only once the chunks are searchable."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from sqlalchemy import text

from ragledger.cli.ingest_progress import ingest_files
from ragledger.events.envelope import EventMetadata

PARAGRAPHS = 1_000


async def test_a_large_document_is_searchable_in_full_when_ingest_returns(
    db, settings, tmp_path: Path
) -> None:
    # One short paragraph per chunk (16-token chunks, no overlap) keeps ~1,000 chunks
    # cheap to embed; the chunks projection still applies ~1,000 vectors.
    small = settings.model_copy(update={"chunk_max_tokens": 16, "chunk_overlap_tokens": 0})
    path = tmp_path / "handbook.txt"
    path.write_text(
        "\n\n".join(f"Rule {i} of the handbook applies to team {i}." for i in range(PARAGRAPHS))
    )
    console = Console(file=(tmp_path / "progress.txt").open("w"), width=200)
    code = await ingest_files(
        db, small, [path], groups=[], wait=True, metadata=EventMetadata(), console=console
    )
    assert code == 0
    # The instant ingest returns, as the application's restricted role.
    async with db.engine.connect() as conn:
        expected = await conn.scalar(text("SELECT chunk_count FROM documents"))
        searchable = await conn.scalar(text("SELECT count(*) FROM chunks WHERE searchable"))
        status = await conn.scalar(text("SELECT status FROM documents"))
    assert expected >= PARAGRAPHS * 0.9
    assert status == "indexed"
    assert searchable == expected
