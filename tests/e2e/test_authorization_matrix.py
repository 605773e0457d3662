"""Every route x {anonymous, employee, auditor, admin, deactivated} -> expected status.

The table below is the platform's authorization policy. The test fails when a route
exists that the table does not mention, so a new route cannot ship without a decision.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.e2e.test_schema_fuzz import assert_documented

PUBLIC = "public"
ANY_USER = frozenset({"employee", "auditor", "admin"})
AUDIT = frozenset({"auditor", "admin"})
ADMIN = frozenset({"admin"})

POLICY: dict[tuple[str, str], str | frozenset[str]] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("POST", "/api/v1/auth/jwt/login"): PUBLIC,
    ("POST", "/api/v1/auth/forgot-password"): PUBLIC,
    ("POST", "/api/v1/auth/reset-password"): PUBLIC,
    ("POST", "/api/v1/auth/request-verify-token"): PUBLIC,
    ("POST", "/api/v1/auth/verify"): PUBLIC,
    ("POST", "/api/v1/auth/jwt/logout"): ANY_USER,
    ("GET", "/api/v1/users/me"): ANY_USER,
    ("GET", "/api/v1/admin/users"): ADMIN,
    ("POST", "/api/v1/admin/users"): ADMIN,
    ("GET", "/api/v1/admin/users/{user_id}"): ADMIN,
    ("PATCH", "/api/v1/admin/users/{user_id}"): ADMIN,
    ("POST", "/api/v1/admin/users/{user_id}/deactivate"): ADMIN,
    ("GET", "/api/v1/admin/groups"): ADMIN,
    ("GET", "/api/v1/admin/anomalies"): ADMIN,
    ("POST", "/api/v1/admin/anomalies/{anomaly_id}/acknowledge"): ADMIN,
    ("POST", "/api/v1/documents"): ADMIN,
    ("GET", "/api/v1/documents"): ANY_USER,
    ("GET", "/api/v1/documents/{document_id}"): ANY_USER,
    ("PATCH", "/api/v1/documents/{document_id}"): ADMIN,
    ("DELETE", "/api/v1/documents/{document_id}"): ADMIN,
    ("POST", "/api/v1/documents/{document_id}/versions"): ADMIN,
    ("POST", "/api/v1/questions"): ANY_USER,
    ("POST", "/api/v1/search"): ANY_USER,
    ("GET", "/api/v1/answers/{answer_id}"): ANY_USER,
    ("POST", "/api/v1/answers/{answer_id}/feedback"): ANY_USER,
    ("GET", "/api/v1/answers/{answer_id}/receipt"): ANY_USER,
    ("GET", "/api/v1/audit/verify"): AUDIT,
    ("POST", "/api/v1/audit/digests"): AUDIT,
    ("GET", "/api/v1/audit/public-key"): AUDIT,
    ("POST", "/api/v1/audit/digests/verify"): AUDIT,
    ("GET", "/api/v1/audit/export"): AUDIT,
    ("GET", "/api/v1/audit/tree-heads"): AUDIT,
    ("POST", "/api/v1/audit/tree-heads"): AUDIT,
    ("GET", "/api/v1/audit/tree-heads/latest"): AUDIT,
    ("GET", "/api/v1/audit/proofs/inclusion"): AUDIT,
    ("GET", "/api/v1/audit/proofs/consistency"): AUDIT,
    ("GET", "/api/v1/audit/verify/from-tree-head"): AUDIT,
    ("GET", "/api/v1/audit/events"): AUDIT,
    ("GET", "/api/v1/audit/answers"): AUDIT,
    ("GET", "/api/v1/audit/answers/{question_id}"): AUDIT,
    ("GET", "/api/v1/audit/documents/{document_id}/history"): AUDIT,
}
DOCS = ["/docs", "/redoc", "/openapi.json"]


def _routes(app) -> list[tuple[str, str]]:
    schema = app.openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    )


async def test_the_policy_names_every_route(app) -> None:
    routes = _routes(app)
    assert set(routes) == set(POLICY), (
        f"routes without a policy: {sorted(set(routes) - set(POLICY))}; "
        f"policy for missing routes: {sorted(set(POLICY) - set(routes))}"
    )


@pytest.mark.parametrize("who", ["anonymous", "employee", "auditor", "admin", "deactivated"])
async def test_matrix(app, client, accounts, who: str) -> None:
    headers = {} if who == "anonymous" else accounts[who].headers
    matrix: dict[tuple[str, str], int] = {}
    for method, path in _routes(app):
        if (method, path) == ("POST", "/api/v1/auth/jwt/logout"):
            continue  # would revoke the token used by the rest of the walk; tested below
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        response = await client.request(method, url, headers=headers, json={})
        matrix[(method, path)] = response.status_code
        # Every refusal is documented on its route (401 with WWW-Authenticate, 403, 404):
        # the schemathesis run found routes that answered statuses they did not declare.
        assert_documented(app, response, path)
        policy = POLICY[(method, path)]
        if policy == PUBLIC:
            assert response.status_code not in (401, 403), (method, path, who)
        elif who in ("anonymous", "deactivated"):
            assert response.status_code == 401, (method, path, who, response.text)
        elif who in policy:
            assert response.status_code not in (401, 403), (method, path, who, response.text)
        else:
            assert response.status_code == 403, (method, path, who, response.text)
    assert matrix, "no route was walked"


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 401), ("deactivated", 401), ("employee", 204), ("auditor", 204), ("admin", 204)],
)
async def test_logout_column(client, accounts, who: str, status: int) -> None:
    headers = {} if who == "anonymous" else accounts[who].headers
    response = await client.post("/api/v1/auth/jwt/logout", headers=headers)
    assert response.status_code == status


@pytest.mark.parametrize("path", DOCS)
async def test_docs_are_public(client, path: str) -> None:
    assert (await client.get(path)).status_code == 200
