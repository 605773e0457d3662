"""Run an evaluation set with a progress bar, show the table, write the JSON report.

The work of `ragledger eval` (see `ragledger.cli.evaluation`), imported when it runs.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragledger.cli.corpus import ensure_corpus
from ragledger.core.runtime import Database
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata
from ragledger.services import users as users_service
from ragledger.services.documents import Reader, reader_of
from ragledger.services.embedding import get_embedder
from ragledger.services.evaluation.dataset import Dataset
from ragledger.services.evaluation.run import (
    NDCG_K,
    SYSTEMS,
    EvalOptions,
    EvaluationReport,
    run_evaluation,
)

# The account questions are asked as when no --as is given: an employee with no
# groups, who reads exactly the public documents (the corpus is ingested public).
EVALUATOR_EMAIL = "evaluator@example.com"


async def _asker(
    database: Database, settings: Settings, email: str | None, metadata: EventMetadata
) -> tuple[Reader, uuid.UUID]:
    async with database.sessionmaker() as session, session.begin():
        user = await users_service.get_by_email(session, email or EVALUATOR_EMAIL)
        if user is None and email is None:
            view = await users_service.create_user(
                session,
                email=EVALUATOR_EMAIL,
                password=secrets.token_urlsafe(32),
                role="employee",
                groups=[],
                password_min_length=settings.password_min_length,
                actor_id=None,
                via="cli",
                metadata=metadata,
            )
            return Reader(view.id, view.role, tuple(view.groups)), view.id
        if user is None or not user.is_active:
            raise LookupError(f"no active user with email {email}")
        return reader_of(user), user.id


async def evaluate(
    database: Database,
    settings: Settings,
    dataset: Dataset,
    *,
    as_email: str | None,
    options: EvalOptions,
    ingest: bool,
    metadata: EventMetadata,
) -> EvaluationReport:
    """Ingest the corpus if asked, then run every question with a progress bar."""
    console = Console(stderr=True)
    document_ids = await ensure_corpus(
        database, settings, dataset, ingest=ingest, metadata=metadata, console=console
    )
    reader, asker_id = await _asker(database, settings, as_email, metadata)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("evaluating", total=len(dataset.questions))
        return await run_evaluation(
            database=database,
            settings=settings,
            embedder=get_embedder(settings),
            dataset=dataset,
            document_ids=document_ids,
            reader=reader,
            asker_id=asker_id,
            options=options,
            metadata=metadata,
            advance=lambda _q: progress.advance(task),
        )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(report: EvaluationReport, console: Console) -> None:
    """Per-question ranks, then the summary by system and question type."""
    k = report.options.top_k
    questions = Table(title="per question (rank of the first chunk holding the evidence)")
    for column in ("id", "type", *SYSTEMS, "declined", "support", "cit. prec."):
        questions.add_column(column)
    for r in report.results:
        ranks = [str(r.rankings[s].first_relevant_rank or "-") for s in SYSTEMS]
        a = r.answer
        questions.add_row(
            r.question.id,
            r.question.type,
            *ranks,
            "-" if a is None or a.declined is None else ("yes" if a.declined else "no"),
            "-" if a is None else _cell(a.support),
            "-" if a is None else _cell(a.citation_precision),
        )
    console.print(questions)
    summary = report.summary()
    table = Table(title=f"retrieval: {report.dataset.corpus.name}, {report.dataset.sha256[:12]}")
    table.add_column("system")
    table.add_column("questions")
    for column in (f"recall@{k}", f"MRR@{k}", f"nDCG@{NDCG_K}"):
        table.add_column(column, justify="right")
    types = sorted({r.question.type for r in report.results if r.question.answerable})
    for system in SYSTEMS:
        for kind in ("all", *types):
            prefix = system if kind == "all" else f"{system}[{kind}]"
            table.add_row(
                system if kind == "all" else "",
                kind,
                _cell(summary.get(f"{prefix}.recall@{k}")),
                _cell(summary.get(f"{prefix}.mrr@{k}")),
                _cell(summary.get(f"{prefix}.ndcg@{NDCG_K}")),
            )
    console.print(table)
    answers = Table(title=f"answers ({report.options.mode})")
    answers.add_column("measure")
    answers.add_column("value", justify="right")
    for name in (
        "answers.support",
        "answers.citation_precision",
        "answers.declined_unanswerable",
        "answers.declined_answerable",
    ):
        answers.add_row(name.removeprefix("answers."), _cell(summary.get(name)))
    console.print(answers)
    if report.answers_note:
        console.print(report.answers_note)
    console.print(
        f"evaluation {report.evaluation_id} recorded; {len(report.results)} questions "
        f"in {report.seconds:.0f} s"
    )


def write_json(report: EvaluationReport, out: Path) -> None:
    """The report as indented JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
