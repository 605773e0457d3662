"""`ragledger eval`'s service path: ingest a corpus, rank three ways, record the run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from ragledger.cli.corpus import ensure_corpus
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.oversight import evaluation_stream
from ragledger.events.registry import registry
from ragledger.services.documents import Reader
from ragledger.services.embedding import get_embedder
from ragledger.services.evaluation.dataset import DatasetError, load_dataset
from ragledger.services.evaluation.run import EvalOptions, run_evaluation
from ragledger.services.users import create_user

SHIPPED = Path(__file__).resolve().parents[3] / "eval" / "python-docs"
PAGES = ["howto/sorting.html", "tutorial/venv.html"]
QUESTIONS = [
    ("q1", "keyword", "Are sorts guaranteed to be stable?", "Sorts are guaranteed to be stable"),
    (
        "q2",
        "paraphrase",
        "Different projects need different versions of the same library; how do I keep them apart?",
        "The module used to create and manage virtual environments is called venv",
    ),
    ("q3", "unanswerable", "What is the capital of Australia?", None),
]


def _dataset(tmp_path: Path) -> Path:
    files = []
    for page in PAGES:
        target = tmp_path / "docs" / page
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHIPPED / page, target)
        files.append({"path": page, "sha256": hashlib.sha256(target.read_bytes()).hexdigest()})
    lines = [{"kind": "corpus", "name": "two-pages", "root": "docs", "files": files}]
    for qid, kind, question, evidence in QUESTIONS:
        lines.append(
            {"kind": "question", "id": qid, "type": kind, "question": question,
             "evidence": evidence, "source": None}
        )  # fmt: skip
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


async def test_an_evaluation_ranks_three_ways_and_is_recorded(db, settings, tmp_path) -> None:
    dataset = load_dataset(_dataset(tmp_path))
    metadata = EventMetadata(actor_id="cli:test", actor_role="operator")
    document_ids = await ensure_corpus(
        db, settings, dataset, ingest=True, metadata=metadata, console=Console(quiet=True)
    )
    assert len(document_ids) == 2
    # A second run finds the corpus already there and ingests nothing.
    again = await ensure_corpus(
        db, settings, dataset, ingest=False, metadata=metadata, console=Console(quiet=True)
    )
    assert again == document_ids
    async with db.sessionmaker() as session, session.begin():
        user = await create_user(
            session,
            email="evaluator@example.com",
            password="a long enough passphrase",
            role="employee",
            groups=[],
            password_min_length=8,
            actor_id=None,
            via="cli",
            metadata=metadata,
        )
    report = await run_evaluation(
        database=db,
        settings=settings,
        embedder=get_embedder(settings),
        dataset=dataset,
        document_ids=document_ids,
        reader=Reader(user.id, user.role, ()),
        asker_id=user.id,
        options=EvalOptions(top_k=5, mode="extractive", answers=False),
        metadata=metadata,
    )
    by_id = {r.question.id: r for r in report.results}
    assert by_id["q1"].relevant_chunks >= 1
    for system in ("hybrid", "exact_dense", "full_text"):
        assert by_id["q1"].rankings[system].recall == 1.0
    assert by_id["q2"].relevant_chunks >= 1
    assert by_id["q3"].relevant_chunks == 0
    summary = report.summary()
    assert summary["hybrid[keyword].recall@5"] == 1.0
    assert summary["hybrid.recall@5"] in (0.5, 1.0)
    assert "exact_dense[paraphrase].ndcg@10" in summary

    async with db.sessionmaker() as session:
        events = await store.read_stream(session, evaluation_stream(report.evaluation_id))
    assert [e.event_type for e in events] == ["EvaluationCompleted"]
    completed = registry.decode(events[0])
    assert completed.dataset_sha256 == dataset.sha256
    assert completed.questions == 3
    assert completed.unanswerable == 1
    assert completed.metrics["hybrid[keyword].recall@5"] == "1.0000"
    assert completed.metrics["hybrid.recall@5"] == f"{summary['hybrid.recall@5']:.4f}"
    assert json.loads(json.dumps(report.to_json()))["summary"]["hybrid[keyword].recall@5"] == 1.0


async def test_a_corpus_not_ingested_is_named(db, settings, tmp_path) -> None:
    dataset = load_dataset(_dataset(tmp_path))
    metadata = EventMetadata(actor_id="cli:test", actor_role="operator")
    with pytest.raises(DatasetError, match="2 of 2 corpus files are not ingested"):
        await ensure_corpus(
            db, settings, dataset, ingest=False, metadata=metadata, console=Console(quiet=True)
        )
