"""Benchmark of the embedding backends on the evaluation corpus: torch, ONNX, ONNX int8.

Embeds exactly what ingestion embeds for the shipped evaluation corpus
(`eval/python-docs.jsonl`: each chunk's `embedding_input`, from the platform's own
extraction and chunking) with each backend, in interleaved rounds in one process, so
the figures are ratios within one run on a shared machine. Baseline: the torch path
as the platform ran it before (`LocalEmbedder`, batches of EMBEDDING_BATCH_SIZE by
character length). For each backend it reports chunks/s, the speed ratio to torch,
the cosine of its vectors to torch's (min and mean), and exact dense recall@5 on the
evaluation questions with its own vectors, so int8's loss of quality is measured on
the same run. Export and quantization (once per data directory) are timed apart.

    uv run python bench/embedding_backends.py             # all chunks, 2 rounds
    uv run python bench/embedding_backends.py --rounds 1  # all chunks, 1 round
    uv run python bench/embedding_backends.py --quick     # 300 chunks, 1 round, no recall

It prints a table and writes ``bench/results/embedding_backends.json``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import argument_parser, fmt, load_average, machine_info, package_version, report

from ragledger.projections.ingestion import embedding_input
from ragledger.services.chunking import chunk_document
from ragledger.services.embedding import LocalEmbedder, local_model_dir, local_token_counter
from ragledger.services.evaluation.dataset import corpus_paths, holds_evidence, load_dataset
from ragledger.services.extraction import extract_text, sniff_content_type
from ragledger.services.onnx_embedding import OnnxEmbedder

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "eval" / "python-docs.jsonl"
OUTPUT = ROOT / "bench" / "results" / "embedding_backends.json"
BATCH_SIZE = 8  # Settings.embedding_batch_size


def corpus_chunks() -> tuple[list[str], list[str]]:
    """(what ingestion embeds, the chunk text) for every chunk of the evaluation corpus."""
    dataset = load_dataset(DATASET)
    count = local_token_counter()
    inputs, texts = [], []
    for path in corpus_paths(dataset.corpus):
        data = path.read_bytes()
        extracted = extract_text(data, sniff_content_type(data))
        chunks = chunk_document(extracted, count_tokens=count, max_tokens=200, overlap_tokens=30)
        for chunk in chunks:
            # The upload's title for a file uploaded without one is its name's stem.
            inputs.append(embedding_input(path.stem, chunk.heading_path, chunk.text))
            texts.append(chunk.text)
    return inputs, texts


def dense_recall_at_5(chunks: np.ndarray, questions: np.ndarray, texts: list[str]) -> float:
    """Exact dense recall@5 over the evaluation's answerable questions."""
    dataset = load_dataset(DATASET)
    hits, total = 0, 0
    for question, vector in zip(dataset.questions, questions, strict=True):
        if question.evidence is None:
            continue
        total += 1
        top = np.argsort(-(chunks @ vector), kind="stable")[:5]
        hits += any(holds_evidence(texts[i], question.evidence) for i in top)
    return hits / total


async def run(quick: bool, rounds: int) -> dict[str, Any]:
    """Time each backend on the corpus; compare vectors and recall with torch's."""
    started = time.perf_counter()
    inputs, texts = corpus_chunks()
    if quick:
        inputs, texts = inputs[:300], texts[:300]
    questions = [q.question for q in load_dataset(DATASET).questions]
    rounds = 1 if quick else rounds
    with tempfile.TemporaryDirectory() as cache:
        backends: dict[str, LocalEmbedder] = {
            "torch": LocalEmbedder(local_model_dir(), batch_size=BATCH_SIZE, torch_threads=0),
            "onnx": OnnxEmbedder(
                local_model_dir(), cache_dir=Path(cache), batch_size=BATCH_SIZE, threads=0
            ),
            "onnx-int8": OnnxEmbedder(
                local_model_dir(),
                cache_dir=Path(cache),
                batch_size=BATCH_SIZE,
                threads=0,
                quantized=True,
            ),
        }
        prepare_s = {}
        for name, embedder in backends.items():
            t0 = time.perf_counter()
            await embedder.warm_up()
            prepare_s[name] = round(time.perf_counter() - t0, 2)
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(rounds):
            for name, embedder in backends.items():
                t0 = time.perf_counter()
                vectors[name] = await embedder.embed(inputs)
                seconds[name].append(time.perf_counter() - t0)
        question_vectors = {name: await e.embed(questions) for name, e in backends.items()}
        for embedder in backends.values():
            await embedder.aclose()
    recall_texts = texts if not quick else None
    results: dict[str, Any] = {
        "benchmark": "embedding_backends",
        "machine": machine_info(),
        "shared_machine_note": "2 cores shared with other sessions; compare ratios only",
        "versions": {
            name: package_version(name) for name in ("torch", "onnxruntime", "transformers")
        },
        "chunks": len(inputs),
        "rounds": rounds,
        "batch_size_torch": BATCH_SIZE,
        "backends": {},
    }
    torch_best = min(seconds["torch"])
    for name in backends:
        cosine = np.sum(vectors[name] * vectors["torch"], axis=1)
        best = min(seconds[name])
        results["backends"][name] = {
            "prepare_s": prepare_s[name],
            "seconds": [round(s, 2) for s in seconds[name]],
            "chunks_per_s": round(len(inputs) / best, 1),
            "speedup_vs_torch": round(torch_best / best, 2),
            "cosine_to_torch_min": round(float(cosine.min()), 6),
            "cosine_to_torch_mean": round(float(cosine.mean()), 6),
            "dense_recall_at_5": None
            if recall_texts is None
            else round(dense_recall_at_5(vectors[name], question_vectors[name], recall_texts), 4),
        }
    results["load_average_at_end"] = load_average()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def table(results: dict[str, Any]) -> str:
    """The backends side by side."""
    lines = [
        f"{results['chunks']} chunks of the evaluation corpus, best of {results['rounds']} "
        f"round(s); machine shared (load {results['machine']['load_average_at_start']})",
        f"{'backend':<10} {'chunks/s':>9} {'x torch':>8} {'cos min':>9} {'cos mean':>9} "
        f"{'recall@5':>9} {'prepare s':>10}",
    ]
    for name, b in results["backends"].items():
        lines.append(
            f"{name:<10} {fmt(b['chunks_per_s']):>9} {fmt(b['speedup_vs_torch'], '.2f'):>8} "
            f"{fmt(b['cosine_to_torch_min'], '.4f'):>9} {fmt(b['cosine_to_torch_mean'], '.4f'):>9} "
            f"{fmt(b['dense_recall_at_5'], '.3f'):>9} {fmt(b['prepare_s']):>10}"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write its results."""
    args = argument_parser(__doc__ or "", quick_help="300 chunks, one round", output=OUTPUT)
    args.add_argument("--rounds", type=int, default=2, help="timed rounds per backend")
    parsed = args.parse_args()
    results = asyncio.run(run(parsed.quick, parsed.rounds))
    report(results, table(results), parsed.output)


if __name__ == "__main__":
    main()
