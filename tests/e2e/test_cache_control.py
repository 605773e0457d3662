"""No response carrying one user's data may be stored by a browser or a proxy."""

from __future__ import annotations

from tests.e2e.test_documents import drain


async def test_api_responses_and_authenticated_ones_are_never_stored(
    db, settings, client, accounts
) -> None:
    employee, admin = accounts["employee"], accounts["admin"]
    me = await client.get("/api/v1/users/me", headers=employee.headers)
    assert me.status_code == 200
    assert me.headers["cache-control"] == "no-store"
    uploaded = await client.post(
        "/api/v1/documents",
        headers=admin.headers,
        files={"file": ("menu.md", b"# Menu\n\nSoup on Mondays.\n", "text/markdown")},
        data={"public": "true"},
    )
    assert uploaded.status_code == 202
    await drain(db, settings)
    listed = await client.get("/api/v1/documents", headers=employee.headers)
    assert [d["title"] for d in listed.json()["items"]] == ["menu"]
    assert listed.headers["cache-control"] == "no-store"
    # Errors and public routes of the API too: a 401 and the health check.
    refused = await client.get("/api/v1/users/me")
    assert (refused.status_code, refused.headers["cache-control"]) == (401, "no-store")
    assert (await client.get("/api/v1/health")).headers["cache-control"] == "no-store"
