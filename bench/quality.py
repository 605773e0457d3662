"""Retrieval variants on the evaluation set, step by step, in one run (issue 16, section 4).

Needs the shipped corpus ingested in the configured database (``uv run ragledger eval
eval/python-docs.jsonl --corpus`` does it; RAGLEDGER_DATA_DIR picks the data directory).
For every question it takes, once: the exact dense ranking with the stored vectors
(brute force) and three word rankings from PostgreSQL full text (every word, as
`websearch_to_tsquery` matched before; any word with `ts_rank_cd`; any word with
`ts_rank` normalised by length, what the platform does now). Each fusion step is then
computed from the same lists, so the rows differ only by the step they name:

- dense: exact dense search (the baseline the hybrid must beat)
- words(...): full text alone
- rrf(...): reciprocal rank fusion, k = 60, equal votes (the platform before)
- wrrf(w): RRF with the words' vote weighted by w
- score(w): cosine + w x word score / the question's best word score (the platform before
  the windows)
- window(a): score(0.1)'s first 15 re-ranked by (1 - a) x cosine + a x the cosine of the
  chunk's best 3-sentence window + score fusion's word bonus (services/window_rerank.py)
- window(a) overlap(w): the same with w x the share of the question's content words in
  the chunk as the word bonus (a = 0.5, w = 0.2 is the platform now)

Relevance: a chunk holds the question's evidence passage. Recall@5, MRR@5, nDCG@10,
overall and by question type. Writes ``bench/results/quality.json`` and prints a table.

    RAGLEDGER_DATA_DIR=... uv run python bench/quality.py
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import argument_parser, machine_info, report

from ragledger.cli.corpus import corpus_documents
from ragledger.core.runtime import open_database
from ragledger.core.settings import get_settings
from ragledger.services.documents import Reader
from ragledger.services.embedding import get_embedder
from ragledger.services.evaluation.dataset import holds_evidence, load_dataset
from ragledger.services.evaluation.rankers import load_catalogue
from ragledger.services.sentences import content_words, overlap
from ragledger.services.window_rerank import best_window_similarities, rescore

ROOT = Path(__file__).resolve().parent.parent
# As RetrievalParams: the score fusion's word weight and how deep the windows re-rank.
TEXT_WEIGHT = 0.1
RERANK_DEPTH = 15
DATASET = ROOT / "eval" / "python-docs.jsonl"
OUTPUT = ROOT / "bench" / "results" / "quality.json"
_ANY = "(SELECT replace(plainto_tsquery('english', :query)::text, ' & ', ' | ')::tsquery AS q) w"
WORDS = {
    "all_cd": "SELECT c.chunk_id, ts_rank_cd(c.tsv, q) FROM chunks c, "
    "websearch_to_tsquery('english', :query) q WHERE c.document_id = ANY(:ids) AND c.searchable "
    "AND c.tsv @@ q ORDER BY 2 DESC, 1 LIMIT 80",
    "any_cd": f"SELECT c.chunk_id, ts_rank_cd(c.tsv, w.q) FROM chunks c, {_ANY} "
    "WHERE c.document_id = ANY(:ids) AND c.searchable AND c.tsv @@ w.q ORDER BY 2 DESC, 1 LIMIT 80",
    "any_rank": f"SELECT c.chunk_id, ts_rank(c.tsv, w.q, 1) FROM chunks c, {_ANY} "
    "WHERE c.document_id = ANY(:ids) AND c.searchable AND c.tsv @@ w.q ORDER BY 2 DESC, 1 LIMIT 80",
}

type Ranking = list[Any]


def _rrf(lists: list[Ranking], weights: list[float], k: int = 60) -> Ranking:
    scores: dict[Any, float] = defaultdict(float)
    for ranking, weight in zip(lists, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] += weight / (k + rank)
    return sorted(scores, key=lambda key: -scores[key])


def _score(dense: list[tuple[Any, float]], words: list[tuple[Any, float]], w: float) -> Ranking:
    best = max((s for _, s in words), default=0.0) or 1.0
    scores = dict(dense)
    for key, s in words:
        scores[key] = scores.get(key, 0.0) + w * s / best
    return sorted(scores, key=lambda key: -scores[key])


def _window(q: dict[str, Any], weight: float, overlap_weight: float | None = None) -> Ranking:
    base = _score(q["dense"], q["any_rank"], TEXT_WEIGHT)
    head = base[:RERANK_DEPTH]
    similarity = dict(q["dense"])
    bonus = _bonus(q["any_rank"])
    if overlap_weight is not None:
        words = content_words(q["question"])
        bonus = {k: overlap_weight * overlap(words, content_words(q["texts"][k])) for k in head}
    rescored = rescore(
        [(k, similarity.get(k, 0.0), bonus.get(k, 0.0)) for k in head],
        [q["windows"][k] for k in head],
        window_weight=weight,
    )
    return [r.key for r in rescored] + base[RERANK_DEPTH:]


def _bonus(words: list[tuple[Any, float]]) -> dict[Any, float]:
    best = max((s for _, s in words), default=0.0) or 1.0
    return {key: TEXT_WEIGHT * s / best for key, s in words}


def measures(ranking: Ranking, relevant: set[Any]) -> tuple[float, float, float]:
    """recall@5, MRR@5, nDCG@10."""
    hits = [key in relevant for key in ranking]
    recall = 1.0 if any(hits[:5]) else 0.0
    mrr = next((1 / r for r, h in enumerate(hits[:5], 1) if h), 0.0)
    dcg = sum(1 / math.log2(r + 1) for r, h in enumerate(hits[:10], 1) if h)
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(relevant), 10) + 1))
    return recall, mrr, dcg / ideal if ideal else 0.0


def variants() -> dict[str, Callable[[dict[str, Any]], Ranking]]:
    """Each step, computed from one question's lists."""
    ids = lambda hits: [key for key, _ in hits]  # noqa: E731
    steps: dict[str, Callable[[dict[str, Any]], Ranking]] = {
        "dense": lambda q: ids(q["dense"]),
        "words(all, cd)": lambda q: ids(q["all_cd"]),
        "words(any, cd)": lambda q: ids(q["any_cd"]),
        "words(any, rank)": lambda q: ids(q["any_rank"]),
        "rrf(dense, all cd) [before]": lambda q: _rrf([ids(q["dense"]), ids(q["all_cd"])], [1, 1]),
        "rrf(dense, any rank)": lambda q: _rrf([ids(q["dense"]), ids(q["any_rank"])], [1, 1]),
    }
    for w in (0.3, 0.5):
        steps[f"wrrf({w}, any rank)"] = lambda q, w=w: _rrf(
            [ids(q["dense"]), ids(q["any_rank"])], [1, w]
        )
    for w in (0.05, 0.1, 0.2, 0.3):
        steps[f"score({w}, any rank)"] = lambda q, w=w: _score(q["dense"], q["any_rank"], w)
    for a in (0.3, 0.5, 0.7, 1.0):
        steps[f"window({a})"] = lambda q, a=a: _window(q, a)
    for w in (0.1, 0.2, 0.3):
        name = f"window(0.5) overlap({w})" + (" [now]" if w == 0.2 else "")
        steps[name] = lambda q, w=w: _window(q, 0.5, w)
    return steps


async def gather() -> tuple[list[dict[str, Any]], int]:
    """Every question's dense and word rankings, and the number of chunks."""
    settings = get_settings()
    dataset = load_dataset(DATASET)
    database = await open_database(settings)
    try:
        found = await corpus_documents(database, dataset)
        document_ids = list(found.values())
        async with database.sessionmaker() as session:
            catalogue = await load_catalogue(
                session, reader=Reader(None, "admin", ()), document_ids=document_ids
            )
        embedder = get_embedder(settings)
        vectors = await embedder.embed([q.question for q in dataset.questions])
        text_of = catalogue.text_of()
        rows = []
        for question, vector in zip(dataset.questions, vectors, strict=True):
            if question.evidence is None:
                continue
            similarity = catalogue.vectors @ vector
            order = np.argsort(-similarity, kind="stable")[:80]
            row: dict[str, Any] = {
                "type": question.type,
                "relevant": {
                    c
                    for c, body in zip(catalogue.chunk_ids, catalogue.texts, strict=True)
                    if holds_evidence(body, question.evidence)
                },
                "dense": [(catalogue.chunk_ids[i], float(similarity[i])) for i in order],
            }
            async with database.sessionmaker() as session:
                for name, sql in WORDS.items():
                    result = await session.execute(
                        text(sql), {"query": question.question, "ids": document_ids}
                    )
                    row[name] = [(key, float(score)) for key, score in result.all()]
            head = _score(row["dense"], row["any_rank"], TEXT_WEIGHT)[:RERANK_DEPTH]
            best = await best_window_similarities(embedder, vector, [text_of[k] for k in head])
            row["windows"] = dict(zip(head, best, strict=True))
            row["texts"] = {k: text_of[k] for k in head}
            row["question"] = question.question
            rows.append(row)
        return rows, len(catalogue.chunk_ids)
    finally:
        await database.dispose()


def main() -> None:
    """Compute every step and write the table."""
    parser = argument_parser(__doc__ or "", quick_help="(no effect)", output=OUTPUT)
    parsed = parser.parse_args()
    started = time.perf_counter()
    rows, chunks = asyncio.run(gather())
    types = ["all", *sorted({r["type"] for r in rows})]
    results: dict[str, Any] = {
        "benchmark": "quality",
        "machine": machine_info(),
        "dataset": str(DATASET.relative_to(ROOT)),
        "chunks": chunks,
        "questions": {t: sum(1 for r in rows if t in ("all", r["type"])) for t in types},
        "steps": {},
    }
    lines = [f"{'step':<30} {'recall@5':>9} {'MRR@5':>7} {'nDCG@10':>8}  recall@5 by type"]
    for name, rank in variants().items():
        per_type = {}
        for kind in types:
            chosen = [measures(rank(r), r["relevant"]) for r in rows if kind in ("all", r["type"])]
            per_type[kind] = [round(sum(m[i] for m in chosen) / len(chosen), 4) for i in range(3)]
        results["steps"][name] = per_type
        by_type = " ".join(f"{t}={per_type[t][0]:.3f}" for t in types[1:])
        overall = per_type["all"]
        lines.append(
            f"{name:<30} {overall[0]:>9.3f} {overall[1]:>7.3f} {overall[2]:>8.3f}  {by_type}"
        )
    results["wall_s"] = round(time.perf_counter() - started, 1)
    report(results, "\n".join(lines), parsed.output)


if __name__ == "__main__":
    main()
