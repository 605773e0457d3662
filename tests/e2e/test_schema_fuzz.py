"""Schemathesis over every operation of the OpenAPI schema, as a signed-in user of each role.

For each of employee, auditor and admin, every operation gets generated requests (valid
and invalid ones), sent with that user's bearer token through the real app (its
lifespan, PostgreSQL, Redis; the OpenAI-compatible fake on loopback as the model and the
embedder), and every response must hold to the schema: no 5xx, a documented status code
and content type, a body that validates against the documented schema, the documented
headers (WWW-Authenticate on 401, Retry-After on 429).

The number of examples per operation and role is RAGLEDGER_FUZZ_EXAMPLES (small by
default, for CI). A longer run by hand:

    RAGLEDGER_FUZZ_EXAMPLES=200 uv run pytest tests/e2e/test_schema_fuzz.py -q

How requests travel: Hypothesis and schemathesis run in a worker thread (Hypothesis
drives plain functions), and each request schemathesis prepares is handed to the app on
the test's event loop through httpx's ASGI transport, so the app answering is the one
whose lifespan the `app` fixture opened. Schemathesis' own ASGI transport is not used:
it runs the app in an event loop of its own and starts a second lifespan there.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import httpx
import hypothesis
import pytest
import requests
import requests.adapters
import schemathesis
import urllib3
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ragledger.api.app_services import app_services
from tests.e2e.conftest import Account, login, make_account
from tests.e2e.test_documents import drain

EXAMPLES = int(os.environ.get("RAGLEDGER_FUZZ_EXAMPLES", "10"))
ROLES = ["employee", "auditor", "admin"]
BASE_URL = "http://testserver"
LOGOUT = ("POST", "/api/v1/auth/jwt/logout")

# Statuses that routes answer but whose declaration lives in files this test's author
# could not change at the time; each is skipped for that operation and status only, by
# the status-code and body-schema checks (5xx, content type and headers still apply).
# Remove an entry once its declaration is fixed.
# Operations whose documented responses are known to be incomplete (none today: the
# gaps the first runs found were closed in the route declarations).
KNOWN_GAPS: dict[tuple[str, str], frozenset[int]] = {}

POLICY = b"""# Leave policy

## Annual leave

Employees get thirty days of annual leave per calendar year. Unused days expire in March.
"""


def _unless_known_gap(check: Callable) -> Callable:
    @functools.wraps(check)
    def wrapper(ctx, response, case):
        if response.status_code in KNOWN_GAPS.get((case.method.upper(), case.path), ()):
            return None
        return check(ctx, response, case)

    return wrapper


CHECKS = [
    not_a_server_error,
    _unless_known_gap(status_code_conformance),
    content_type_conformance,
    _unless_known_gap(response_schema_conformance),
    response_headers_conformance,
]


def assert_documented(app, response: httpx.Response, path: str) -> None:
    """Fail unless the app's OpenAPI schema documents this response of the operation at
    `path` (the template, "/api/v1/documents/{document_id}"): status, content type, body
    and headers, with the same checks and known gaps as the fuzzing."""
    operation = schemathesis.openapi.from_dict(app.openapi())[path][response.request.method]
    template = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path))
    parameters = re.fullmatch(template, response.request.url.path)
    assert parameters is not None, (path, response.request.url.path)
    case = operation.Case(path_parameters=parameters.groupdict())
    case.validate_response(response, checks=CHECKS)


@pytest.fixture
def settings(settings, fake_openai, monkeypatch):
    """The fake as model and embedder, and rate limits that fuzzing does not reach."""
    # The embedder takes its key from the provider's variable (there is no setting).
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    unlimited = "1000000/minute"
    return settings.model_copy(
        update={
            "llm_model": "openai/fake-chat",
            "llm_api_base": fake_openai.base_url,
            "llm_api_key": SecretStr(fake_openai.api_key),
            "llm_num_retries": 0,
            # The local embedding model costs seconds to load and tens of ms a query on
            # 2 cores; the fake's vectors have the same size and go through litellm.
            "embedding_model": "openai/fake-embed",
            "embedding_api_base": fake_openai.base_url,
            "rate_limit_login_per_account": unlimited,
            "rate_limit_login_per_address": unlimited,
            "rate_limit_upload_per_user": unlimited,
            "rate_limit_questions_per_user": unlimited,
            "rate_limit_search_per_user": unlimited,
            "rate_limit_reset_request_per_address": unlimited,
            "rate_limit_reset_request_per_account": unlimited,
        }
    )


async def _ask(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        "/api/v1/questions", headers=account.headers, json={"question": "How much leave?"}
    )
    assert response.status_code == 200, response.text
    first = next(line for line in response.text.splitlines() if line.startswith("data: "))
    return json.loads(first.removeprefix("data: "))["question_id"]


async def _seed(db, settings, client, me: Account, admin: Account) -> dict[str, list[str]]:
    """Ids that exist, so that generated requests also reach past the routes' 404s: a
    document, an answer of `me`'s and one of the admin's, a throwaway account, an
    anomaly about it. Keyed by path parameter name."""
    uploaded = await client.post(
        "/api/v1/documents",
        headers=admin.headers,
        files={"file": ("leave.md", POLICY, "text/markdown")},
    )
    assert uploaded.status_code == 202, uploaded.text
    await drain(db, settings)
    answers = sorted({await _ask(client, me), await _ask(client, admin)})
    throwaway = await make_account(db, "tom@example.com", "employee", ("hr",))
    for _ in range(settings.anomaly_auth_failures_per_account):
        await client.post(
            "/api/v1/auth/jwt/login", data={"username": throwaway.email, "password": "wrong!"}
        )
    await drain(db, settings)
    (anomaly,) = (await client.get("/api/v1/admin/anomalies", headers=admin.headers)).json()[
        "items"
    ]
    return {
        "document_id": [uploaded.json()["document_id"]],
        "answer_id": answers,
        "question_id": answers,
        # Only the throwaway account: deactivating or demoting `me` would end the walk.
        "user_id": [str(throwaway.id)],
        "anomaly_id": [anomaly["anomaly_id"]],
    }


class _AppAdapter(requests.adapters.BaseAdapter):
    """Send what schemathesis prepared to the app, on the test's event loop."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._client = client
        self._loop = loop
        self._builder = requests.adapters.HTTPAdapter()

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body or b""
        headers = [
            (name.encode("latin-1"), value.encode("latin-1") if isinstance(value, str) else value)
            for name, value in request.headers.items()
        ]
        started = time.perf_counter()
        answer = asyncio.run_coroutine_threadsafe(
            self._client.request(
                request.method,
                request.url,
                headers=headers,
                content=body.encode() if isinstance(body, str) else body,
            ),
            self._loop,
        ).result(timeout=120)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=answer.headers.multi_items(),
            status=answer.status_code,
            reason=answer.reason_phrase,
            version=11,
            preload_content=False,
            decode_content=False,
        )
        response = self._builder.build_response(request, raw)
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return response

    def close(self) -> None:
        self._builder.close()


def _fuzz(operation, send: Callable, seeds: dict[str, list[str]]) -> None:
    """Hypothesis over one operation; raises the first failure found, shrunk."""
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    for name, values in seeds.items():
        if f"{{{name}}}" in operation.path:
            strategies += [
                operation.as_strategy(GenerationMode.POSITIVE, path_parameters={name: value})
                for value in values
            ]

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=st.one_of(strategies))
    def run(case) -> None:
        send(case)

    run()


@pytest.mark.parametrize("role", ROLES)
async def test_every_operation_holds_to_the_schema(app, client, db, settings, role: str) -> None:
    admin = await make_account(db, "adam@example.com", "admin")
    me = admin if role == "admin" else await make_account(db, "me@example.com", role, ("hr",))
    for account in {admin.email: admin, me.email: me}.values():
        await login(client, account)
    seeds = await _seed(db, settings, client, me, admin)

    schema = schemathesis.openapi.from_dict(app.openapi())
    session = requests.Session()
    session.mount("http://", _AppAdapter(client, asyncio.get_running_loop()))
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    failures: dict[str, str] = {}

    def sender(label: str, fresh_token: bool) -> Callable:
        def send(case) -> None:
            if fresh_token:
                # Logout revokes the token it is sent with, which would sign `me` out
                # for the rest of the walk: each logout gets a token of its own.
                token, _claims = app_services(app).tokens.issue(me.id)
                headers = {"Authorization": f"Bearer {token}"}
            else:
                headers = me.headers
            response = case.call(base_url=BASE_URL, session=session, headers=headers)
            statuses[label][response.status_code] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        return send

    def walk() -> None:
        for result in schema.get_all_operations():
            operation = result.ok()
            key = (operation.method.upper(), operation.path)
            try:
                _fuzz(operation, sender(operation.label, key == LOGOUT), seeds)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (reported below)
                # Cut: a shrunk request body can still be a megabyte of text.
                failures[operation.label] = f"{type(exc).__name__}: {exc}"[:5000]

    await asyncio.to_thread(walk)

    tally = "\n".join(f"{label}: {dict(sorted(c.items()))}" for label, c in statuses.items())
    print(f"statuses as {role}:\n{tally}")  # shown with -s, and on failure
    assert not failures, "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())
    assert len(statuses) == len(list(schema.get_all_operations()))
    # Every request carried a valid token of `me`'s (or, for logout, a fresh one): a 401
    # would mean the walk went on signed out and tested nothing past authentication.
    assert not [label for label, counts in statuses.items() if counts[401]], tally
    assert (await client.get("/api/v1/users/me", headers=me.headers)).json()["role"] == role
