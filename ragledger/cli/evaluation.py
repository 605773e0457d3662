"""`ragledger eval`: measure retrieval and answers on an evaluation set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragledger.cli._common import cli_metadata, command_settings, fail, with_database
from ragledger.core.runtime import Database


def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Evaluation set (JSON Lines).")],
    as_email: Annotated[
        str | None, typer.Option("--as", help="Ask as this account (default: an evaluator).")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, max=20, help="Context chunks (k).")] = 5,
    mode: Annotated[str, typer.Option(help="extractive or generative answers.")] = "extractive",
    answers: Annotated[bool, typer.Option(help="Run the answer path too.")] = True,
    corpus: Annotated[bool, typer.Option(help="Ingest the corpus files that are missing.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
) -> None:
    """Measure retrieval and answers on an evaluation set; recorded as EvaluationCompleted."""
    from rich.console import Console

    from ragledger.cli.evaluation_progress import evaluate as run_eval
    from ragledger.cli.evaluation_progress import render, write_json
    from ragledger.services.evaluation.dataset import DatasetError, load_dataset
    from ragledger.services.evaluation.run import MODES, EvalOptions

    if mode not in MODES:
        fail(f"error: --mode must be one of {', '.join(MODES)}", code=2)
    settings = command_settings()
    if answers and mode == "generative" and settings.llm_model is None:
        # Otherwise every question would record the answer path's "no_model" error.
        fail(
            "error: --mode generative needs a language model: set LLM_MODEL (the bundled "
            "one is ragledger-local/smollm2-135m-instruct)",
            code=2,
        )
    try:
        loaded = load_dataset(dataset)
    except DatasetError as exc:
        fail(f"error: {exc}", code=2)
    options = EvalOptions(top_k=top_k, mode=mode, answers=answers)

    async def work(database: Database):  # noqa: ANN202
        return await run_eval(
            database,
            settings,
            loaded,
            as_email=as_email,
            options=options,
            ingest=corpus,
            metadata=cli_metadata(),
        )

    try:
        report = with_database(work)
    except (DatasetError, LookupError) as exc:
        fail(f"error: {exc}")
    render(report, Console())
    if out is not None:
        write_json(report, out)
        typer.echo(f"report written to {out}")
