"""Run an evaluation set through the platform's search and answer paths, and record it."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ragledger.core.ids import uuid7
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from ragledger.events import store
from ragledger.events.envelope import EventMetadata
from ragledger.events.oversight import EvaluationCompleted, evaluation_stream
from ragledger.services.answering import (
    QuestionRequest,
    StreamEvent,
    answer_question,
    question_request,
    retrieval_params,
)
from ragledger.services.documents import Reader
from ragledger.services.embedding import Embedder
from ragledger.services.evaluation import rankers
from ragledger.services.evaluation.answers import AnswerScores, score_answer
from ragledger.services.evaluation.dataset import Dataset, EvalQuestion, holds_evidence
from ragledger.services.evaluation.metrics import mean, mrr_at_k, ndcg_at_k, recall_at_k

log = structlog.get_logger(__name__)

SYSTEMS = ("hybrid", "exact_dense", "full_text")
NDCG_K = 10
MODES = ("extractive", "generative")


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """How to run: context size, answer mode, whether answers run at all."""

    top_k: int
    mode: str
    answers: bool


@dataclass(frozen=True, slots=True)
class RankScores:
    """One system's ranking of one question."""

    recall: float
    mrr: float
    ndcg: float
    first_relevant_rank: int | None


@dataclass(frozen=True, slots=True)
class QuestionResult:
    """Everything measured for one question."""

    question: EvalQuestion
    relevant_chunks: int
    rankings: dict[str, RankScores]
    answer: AnswerScores | None


@dataclass(slots=True)
class EvaluationReport:
    """A finished run: per-question results, the summary and how it ran."""

    evaluation_id: uuid.UUID
    dataset: Dataset
    options: EvalOptions
    embedding_model: str
    results: list[QuestionResult] = field(default_factory=list)
    answers_note: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, float | None]:
        """Mean measures by system and question type, then the answer measures."""
        k = self.options.top_k
        out: dict[str, float | None] = {}
        ranked = [r for r in self.results if r.question.answerable and r.relevant_chunks]
        types = ["all", *sorted({r.question.type for r in ranked})]
        for system in SYSTEMS:
            for kind in types:
                chosen = [r for r in ranked if kind in ("all", r.question.type)]
                prefix = system if kind == "all" else f"{system}[{kind}]"
                out[f"{prefix}.recall@{k}"] = mean(r.rankings[system].recall for r in chosen)
                out[f"{prefix}.mrr@{k}"] = mean(r.rankings[system].mrr for r in chosen)
                out[f"{prefix}.ndcg@{NDCG_K}"] = mean(r.rankings[system].ndcg for r in chosen)
        answered = [r for r in self.results if r.answer is not None and r.answer.error is None]
        if answered:
            gold = [r for r in answered if r.question.answerable]
            off = [r for r in answered if not r.question.answerable]
            out["answers.support"] = mean(r.answer.support for r in gold if r.answer)
            out["answers.citation_precision"] = mean(
                r.answer.citation_precision for r in gold if r.answer
            )
            out["answers.declined_unanswerable"] = mean(
                None if r.answer is None or r.answer.declined is None else float(r.answer.declined)
                for r in off
            )
            out["answers.declined_answerable"] = mean(
                None if r.answer is None or r.answer.declined is None else float(r.answer.declined)
                for r in gold
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-ready values."""
        return {
            "evaluation_id": str(self.evaluation_id),
            "dataset": {
                "path": str(self.dataset.path),
                "sha256": self.dataset.sha256,
                "corpus": self.dataset.corpus.name,
                "questions": len(self.dataset.questions),
                "unanswerable": sum(1 for q in self.dataset.questions if not q.answerable),
            },
            "options": dataclasses.asdict(self.options),
            "embedding_model": self.embedding_model,
            "answers_note": self.answers_note,
            "seconds": round(self.seconds, 1),
            "evidence_not_in_any_chunk": [
                r.question.id
                for r in self.results
                if r.question.answerable and not r.relevant_chunks
            ],
            "summary": {
                name: None if value is None else round(value, 4)
                for name, value in self.summary().items()
            },
            "questions": [
                {
                    "id": r.question.id,
                    "type": r.question.type,
                    "question": r.question.question,
                    "relevant_chunks": r.relevant_chunks,
                    "rankings": {
                        name: dataclasses.asdict(score) for name, score in r.rankings.items()
                    },
                    "answer": None if r.answer is None else dataclasses.asdict(r.answer),
                }
                for r in self.results
            ],
        }


def rank_scores(ranking: Sequence[uuid.UUID], relevant: set[uuid.UUID], k: int) -> RankScores:
    """recall@k, MRR@k and nDCG@10 of one ranking against the relevant chunk ids."""
    hits = [chunk_id in relevant for chunk_id in ranking]
    first = next((rank for rank, hit in enumerate(hits, start=1) if hit), None)
    return RankScores(
        recall=recall_at_k(hits, k),
        mrr=mrr_at_k(hits, k),
        ndcg=ndcg_at_k(hits, NDCG_K, relevant_total=len(relevant)),
        first_relevant_rank=first,
    )


async def _answer(
    database: Database,
    settings: Settings,
    embedder: Embedder,
    request: QuestionRequest,
    question: EvalQuestion,
    texts: dict[uuid.UUID, str],
) -> AnswerScores:
    context: list[uuid.UUID] = []
    tokens: list[str] = []
    outcome: dict[str, Any] = {}

    async def emit(event: StreamEvent) -> None:
        if event.name == "context":
            context.extend(uuid.UUID(c["chunk_id"]) for c in event.data["citations"])
        elif event.name == "token":
            tokens.append(str(event.data["text"]))
        elif event.name in ("done", "error"):
            outcome.update(event=event.name, **event.data)

    await answer_question(
        request,
        sessionmaker=database.sessionmaker,
        embedder=embedder,
        settings=settings,
        emit=emit,
    )
    if outcome.get("event") != "done":
        return AnswerScores(
            answer="".join(tokens),
            declined=None,
            decline_reason=None,
            support=None,
            citations=(),
            citation_precision=None,
            error=str(outcome.get("reason", "no outcome")),
        )
    return score_answer(
        done=outcome,
        answer="".join(tokens),
        context=context,
        texts=texts,
        evidence=question.evidence,
    )


async def run_evaluation(
    *,
    database: Database,
    settings: Settings,
    embedder: Embedder,
    dataset: Dataset,
    document_ids: Sequence[uuid.UUID],
    reader: Reader,
    asker_id: uuid.UUID,
    options: EvalOptions,
    metadata: EventMetadata,
    advance: Callable[[EvalQuestion], None] | None = None,
) -> EvaluationReport:
    """Every question through the three rankings and (optionally) the answer path.

    The run ends with an EvaluationCompleted event holding the dataset's hash and the
    summary, so auditors can see when quality was last measured and how it came out.
    """
    started = time.perf_counter()
    report = EvaluationReport(
        evaluation_id=uuid7(),
        dataset=dataset,
        options=options,
        embedding_model=embedder.info.name,
    )
    depth = max(options.top_k, NDCG_K)
    params = retrieval_params(settings, depth)
    async with database.sessionmaker() as session:
        catalogue = await rankers.load_catalogue(session, reader=reader, document_ids=document_ids)
    texts = catalogue.text_of()
    for question in dataset.questions:
        vector = (await embedder.embed([question.question]))[0]
        relevant = (
            {cid for cid, body in texts.items() if holds_evidence(body, question.evidence)}
            if question.evidence is not None
            else set()
        )
        async with database.sessionmaker() as session, session.begin():
            rankings = {
                "hybrid": await rankers.hybrid(
                    session,
                    question.question,
                    vector,
                    reader=reader,
                    params=params,
                    document_ids=document_ids,
                    embedder=embedder,
                ),
                "exact_dense": rankers.exact_dense(catalogue, vector, k=depth),
                "full_text": await rankers.full_text(
                    session, question.question, reader=reader, document_ids=document_ids, k=depth
                ),
            }
        answer = None
        if options.answers:
            # Built as the API and the CLI build theirs: checked, with a new question id.
            async with database.sessionmaker() as session:
                request = await question_request(
                    session,
                    question=question.question,
                    top_k=options.top_k,
                    document_ids=document_ids,
                    mode=options.mode,
                    reader=reader,
                    asker_id=asker_id,
                    metadata=metadata,
                    settings=settings,
                )
            answer = await _answer(database, settings, embedder, request, question, texts)
        report.results.append(
            QuestionResult(
                question=question,
                relevant_chunks=len(relevant),
                rankings={
                    name: rank_scores(ranking, relevant, options.top_k)
                    for name, ranking in rankings.items()
                },
                answer=answer,
            )
        )
        if advance is not None:
            advance(question)
    report.seconds = time.perf_counter() - started
    await _record(database, report, metadata)
    return report


async def _record(database: Database, report: EvaluationReport, metadata: EventMetadata) -> None:
    summary = report.summary()
    dataset = report.dataset
    await store.append_autocommitted(
        database.sessionmaker,
        evaluation_stream(report.evaluation_id),
        [
            EvaluationCompleted(
                evaluation_id=report.evaluation_id,
                dataset_name=dataset.corpus.name,
                dataset_sha256=dataset.sha256,
                questions=len(dataset.questions),
                unanswerable=sum(1 for q in dataset.questions if not q.answerable),
                top_k=report.options.top_k,
                mode=report.options.mode if report.answers_note is None else "none",
                embedding_model=report.embedding_model,
                metrics={
                    name: f"{value:.4f}" for name, value in summary.items() if value is not None
                },
            )
        ],
        expected_version=0,
        metadata=metadata,
    )
    log.info(
        "evaluation_completed",
        evaluation_id=str(report.evaluation_id),
        dataset_sha256=dataset.sha256,
        questions=len(dataset.questions),
        seconds=round(report.seconds, 1),
    )
