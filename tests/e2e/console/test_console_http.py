"""The console over plain HTTP: sign-in, the cookie session, CSRF and role checks.

Fast checks through the app in process (httpx); the browser scenarios are in
test_console_browser.py.
"""

from __future__ import annotations

import dataclasses
import re

import httpx
import pytest
from sqlalchemy import select

from ragledger.models.ledger import EventRow
from tests.e2e.conftest import PASSWORD, Account, make_account

ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def settings(settings):
    """Three sign-ins per account per 15 minutes, so a lockout is quick to reach."""
    return settings.model_copy(update={"rate_limit_login_per_account": "3/15minute"})


async def events_of(db, event_type: str) -> list[dict]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(EventRow).where(EventRow.event_type == event_type).order_by(EventRow.position)
        )
        return [row.payload for row in rows]


async def sign_in(client: httpx.AsyncClient, account: Account) -> tuple[str, str]:
    """Sign in through the page; the session cookie and the page's CSRF token."""
    response = await client.post(
        "/sign-in",
        data={"email": account.email, "password": account.password, "next": "/"},
        headers=ORIGIN,
    )
    assert response.status_code == 303, response.text
    cookie = response.cookies["ragledger_session"]
    client.cookies.set("ragledger_session", cookie)
    page = await client.get("/")
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)
    assert token is not None
    return cookie, token.group(1)


async def test_anonymous_pages_redirect_to_sign_in(client) -> None:
    response = await client.get("/my/questions?page=2")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=%2Fmy%2Fquestions%3Fpage%3D2"
    page = await client.get("/sign-in")
    assert page.status_code == 200
    assert '<label for="email">Email</label>' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


async def test_sign_in_sets_a_strict_http_only_cookie_holding_an_api_token(
    client, accounts
) -> None:
    response = await client.post(
        "/sign-in",
        data={"email": accounts["employee"].email, "password": PASSWORD, "next": "/documents"},
        headers=ORIGIN,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/documents"
    set_cookie = response.headers["set-cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie
    assert "Secure" not in set_cookie  # plain http here
    cookie = response.cookies["ragledger_session"]
    # The same token works as a bearer token on the API.
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {cookie}"})
    assert me.json()["email"] == accounts["employee"].email


async def test_sign_in_over_https_from_a_trusted_proxy_sets_secure(client, accounts, app) -> None:
    from ragledger.api.app_services import app_services, install_app_services
    from ragledger.api.client_address import TrustedProxies

    proxies = TrustedProxies.parse(["203.0.113.0/24"])
    install_app_services(app, dataclasses.replace(app_services(app), trusted_proxies=proxies))
    response = await client.post(
        "/sign-in",
        data={"email": accounts["employee"].email, "password": PASSWORD},
        headers={"Origin": "https://testserver", "X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 303, response.text
    assert "Secure" in response.headers["set-cookie"]


async def test_failed_sign_in_keeps_the_email_and_records_login_failed(
    client, accounts, db
) -> None:
    response = await client.post(
        "/sign-in",
        data={"email": accounts["employee"].email, "password": "wrong password!!"},
        headers=ORIGIN,
    )
    assert response.status_code == 400
    assert "Incorrect email or password." in response.text
    assert f'value="{accounts["employee"].email}"' in response.text
    assert "ragledger_session" not in response.cookies
    failed = await events_of(db, "LoginFailed")
    assert [f["reason"] for f in failed] == ["wrong_password"]


async def test_sign_in_lockout_says_when_to_retry_and_is_recorded(client, db) -> None:
    for attempt in range(4):
        response = await client.post(
            "/sign-in",
            data={"email": "ghost@example.com", "password": f"guess number {attempt}"},
            headers=ORIGIN,
        )
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.text
    assert int(response.headers["retry-after"]) > 0
    assert 'value="ghost@example.com"' in response.text
    assert len(await events_of(db, "LoginFailed")) == 3
    [limited] = await events_of(db, "RateLimitExceeded")
    assert limited["scope"] == "login_account"


async def test_cross_site_sign_in_is_refused(client, accounts, db) -> None:
    response = await client.post(
        "/sign-in",
        data={"email": accounts["employee"].email, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "ragledger_session" not in response.cookies
    denied = await events_of(db, "AccessDenied")
    assert denied[-1]["reason"] == "csrf_origin"


async def test_cookie_state_change_needs_the_csrf_token_and_our_origin(
    client, accounts, db
) -> None:
    cookie, csrf = await sign_in(client, accounts["employee"])
    client.cookies.set("ragledger_session", cookie)
    body = {"question": "How many days of leave?"}
    # No token: refused before anything runs, and recorded as a denial.
    no_token = await client.post("/api/v1/questions", json=body, headers=ORIGIN)
    assert no_token.status_code == 403
    assert "security token" in no_token.json()["detail"]
    # A token from another session is as good as none.
    forged = await client.post(
        "/api/v1/questions",
        json=body,
        headers={**ORIGIN, "X-CSRF-Token": "0" * 64},
    )
    assert forged.status_code == 403
    # The right token from another site.
    cross_site = await client.post(
        "/api/v1/questions",
        json=body,
        headers={"Origin": "https://evil.example", "X-CSRF-Token": csrf},
    )
    assert cross_site.status_code == 403
    # A form posted without its token.
    form = await client.post("/sign-out", data={}, headers=ORIGIN)
    assert form.status_code == 403
    # The first denial of each reason from a source is recorded at once; the repeats are
    # counted in Redis and recorded as one event with their count when the window ends
    # (issue 14, item 9; tests/e2e/test_abuse.py covers the counts).
    first = [e["reason"] for e in await events_of(db, "AccessDenied")]
    assert first == ["csrf_token", "csrf_origin"]
    # A bearer token needs no CSRF token (no cookie is involved).
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {cookie}"})
    assert me.status_code == 200


async def test_signed_out_cookie_is_refused_everywhere(client, accounts, db) -> None:
    cookie, csrf = await sign_in(client, accounts["employee"])
    client.cookies.set("ragledger_session", cookie)
    out = await client.post("/sign-out", data={"csrf_token": csrf}, headers=ORIGIN)
    assert out.status_code == 303
    assert out.headers["location"] == "/sign-in"
    assert 'ragledger_session=""' in out.headers["set-cookie"]
    assert len(await events_of(db, "UserLoggedOut")) == 1
    # The browser drops it; a copy kept elsewhere is put back.
    client.cookies.set("ragledger_session", cookie)
    page = await client.get("/")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/sign-in")
    client.cookies.set("ragledger_session", cookie)
    api = await client.get("/api/v1/users/me")
    assert api.status_code == 401
    # Both refusals share a source and reason: the first is recorded at once, the second
    # is counted into the window's summary (issue 14, item 9).
    assert [e["reason"] for e in await events_of(db, "AccessDenied")] == ["token_revoked"]


async def test_deactivated_account_cookie_is_refused(client, accounts, db) -> None:
    # The deactivated account's token (issued before deactivation) in the cookie.
    client.cookies.set("ragledger_session", accounts["deactivated"].token)
    page = await client.get("/")
    assert page.status_code == 303
    reasons = [e["reason"] for e in await events_of(db, "AccessDenied")]
    assert reasons == ["deactivated"]


# The console's policy, like the API's matrix: every page and who may open it.
PAGES: dict[str, frozenset[str]] = {
    "/": frozenset({"employee", "auditor", "admin"}),
    "/my/questions": frozenset({"employee", "auditor", "admin"}),
    "/documents": frozenset({"employee", "auditor", "admin"}),
    "/audit/answers": frozenset({"auditor", "admin"}),
    "/audit/ledger": frozenset({"auditor", "admin"}),
    "/audit/ledger/1": frozenset({"auditor", "admin"}),
    "/audit/integrity": frozenset({"auditor", "admin"}),
    "/admin/documents": frozenset({"admin"}),
    "/admin/users": frozenset({"admin"}),
    "/admin/anomalies": frozenset({"admin"}),
    "/admin/status": frozenset({"admin"}),
}


def test_the_console_policy_names_every_page(app) -> None:
    from fastapi.routing import APIRoute

    from ragledger.web import PAGE_MODULES

    pages = {
        route.path
        for module in PAGE_MODULES
        for route in module.router.routes
        if isinstance(route, APIRoute) and "GET" in route.methods and "{" not in route.path
    }
    assert pages - {"/sign-in"} == {p for p in PAGES if "/1" not in p}


@pytest.mark.parametrize("who", ["anonymous", "employee", "auditor", "admin"])
async def test_pages_by_role(client, accounts, db, who: str) -> None:
    if who != "anonymous":
        client.cookies.set("ragledger_session", accounts[who].token)
    for path, allowed in PAGES.items():
        response = await client.get(path)
        if who == "anonymous":
            assert response.status_code == 303, path
        elif who in allowed:
            assert response.status_code == 200, (path, response.text)
            assert "<h1>" in response.text
        else:
            assert response.status_code == 403, path
            assert "your role does not allow this" in response.text
    views = [e["view"] for e in await events_of(db, "AuditViewed")]
    if who in ("auditor", "admin"):
        assert views == ["answers", "events", "events", "integrity"]
    else:
        assert views == []


async def test_audit_filters_keep_input_and_explain_errors(client, accounts) -> None:
    client.cookies.set("ragledger_session", accounts["auditor"].token)
    response = await client.get(
        "/audit/answers",
        params={"asked_from": "2026-02-01T00:00", "asked_to": "2026-01-01T00:00", "asker": "x"},
    )
    assert response.status_code == 422
    assert "Asker must be an id" in response.text
    reversed_range = await client.get(
        "/audit/answers",
        params={"asked_from": "2026-02-01T00:00", "asked_to": "2026-01-01T00:00"},
    )
    assert reversed_range.status_code == 400
    assert 'value="2026-02-01T00:00"' in reversed_range.text
    ledger = await client.get("/audit/ledger", params={"cursor": "forged"})
    assert ledger.status_code == 400


async def test_every_page_is_under_150_kb_of_its_own_html_css_and_js(client, accounts) -> None:
    client.cookies.set("ragledger_session", accounts["admin"].token)
    weights = {}
    for path in PAGES:
        page = await client.get(path)
        assert page.status_code == 200, path
        total = len(page.content)
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert "unsafe" not in response.headers["content-security-policy"]
            total += len(response.content)
        weights[path] = total
    print("console page weights (bytes):", weights)
    assert max(weights.values()) < 150_000, weights


async def test_pages_carry_no_inline_script_or_style(client, accounts) -> None:
    client.cookies.set("ragledger_session", accounts["admin"].token)
    for path in PAGES:
        text = (await client.get(path)).text
        assert "<script>" not in text, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert "<style" not in text, path
        assert " style=" not in text, path
        assert not re.search(r"<[^>]+\son[a-z]+=", text), path


async def test_console_errors_are_pages_and_lists_keep_their_filters(
    client, accounts, db, monkeypatch
) -> None:
    """One app for both (each app and its accounts cost seconds of CI)."""
    # Anonymous: sign in first, whatever the address holds.
    anonymous = await client.get("/documents/not-an-id")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/sign-in?next=%2Fdocuments%2Fnot-an-id"
    # An employee on an auditor's page with a malformed id: the role decides first.
    client.cookies.set("ragledger_session", accounts["employee"].token)
    denied = await client.get("/audit/answers/not-an-id")
    assert denied.status_code == 403
    assert "text/html" in denied.headers["content-type"]

    client.cookies.set("ragledger_session", accounts["admin"].token)
    for path in ("/documents/not-an-id", "/audit/answers/123", "/audit/documents/x-y-z"):
        page = await client.get(path)
        assert page.status_code == 404, path
        assert "text/html" in page.headers["content-type"], path
        assert "<h1>Page not found</h1>" in page.text
        assert "There is no page at this address." in page.text
        assert 'href="/admin/users"' in page.text  # the signed-in layout, with navigation
    unknown = await client.get("/no/such/page")
    assert unknown.status_code == 404
    assert "There is no page at this address." in unknown.text
    bad_query = await client.get("/admin/users", params={"page": "two"})
    assert bad_query.status_code == 422
    assert "<h1>Invalid input</h1>" in bad_query.text
    assert "page: input should be a valid integer" in bad_query.text
    wrong_method = await client.get(f"/admin/users/{accounts['employee'].id}")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert "This page cannot be used that way." in wrong_method.text

    # The API keeps its JSON answers.
    headers = {"Authorization": f"Bearer {accounts['admin'].token}"}
    api_unknown = await client.get("/api/v1/no/such/route", headers=headers)
    assert api_unknown.status_code == 404
    assert api_unknown.json() == {"detail": "Not Found"}
    api_malformed = await client.get("/api/v1/documents/not-an-id", headers=headers)
    assert api_malformed.status_code == 422
    assert api_malformed.json()["detail"][0]["loc"] == ["path", "document_id"]
    missing_asset = await client.get("/static/no-such-file.css")
    assert missing_asset.status_code == 404
    assert "text/html" not in missing_asset.headers.get("content-type", "")

    # The Users list, paged: its links and its row actions keep the filters.
    from ragledger.web.pages import users as users_page

    # Two accounts a page, so that three auditors take two pages.
    monkeypatch.setattr(users_page, "PAGE_SIZE", 2)
    await make_account(db, "audrey@example.com", "auditor")
    await make_account(db, "audun@example.com", "auditor")
    _cookie, csrf = await sign_in(client, accounts["admin"])
    first = await client.get("/admin/users", params={"role": "auditor", "email": "aud"})
    assert first.status_code == 200
    assert 'href="?email=aud&amp;role=auditor&amp;page=2" rel="next"' in first.text
    second = await client.get("/admin/users?email=aud&role=auditor&page=2")
    assert 'href="?email=aud&amp;role=auditor&amp;page=1" rel="prev"' in second.text
    listed = re.findall(r'<tr data-email="([^"]+)"', second.text)
    assert listed == ["audun@example.com"]
    # A change made on page 2 comes back to page 2 of the same filtered list; the form's
    # `back` keeps the list's own parameters and nothing else.
    assert 'name="back" value="email=aud&amp;role=auditor&amp;page=2"' in second.text
    target = re.search(r'action="/admin/users/([0-9a-f-]+)"', second.text)
    assert target is not None
    changed = await client.post(
        f"/admin/users/{target.group(1)}",
        data={
            "csrf_token": csrf,
            "groups": "legal",
            "back": "email=aud&role=auditor&page=2&next=https://evil.example",
        },
        headers=ORIGIN,
    )
    assert changed.status_code == 303, changed.text
    assert changed.headers["location"] == "/admin/users?email=aud&role=auditor&page=2"


def test_page_links_keep_filters_and_back_keeps_only_known_names() -> None:
    from starlette.datastructures import QueryParams

    from ragledger.web.paging import back_query, query_prefix

    assert query_prefix(QueryParams("status=failed&status=answered&page=3&asker=")) == (
        "status=failed&status=answered&"
    )
    assert query_prefix(QueryParams("page=2")) == ""
    assert back_query("role=admin&page=2&url=//evil.example", ("role", "page")) == (
        "role=admin&page=2"
    )
    assert back_query("%zz&&=", ("page",)) == ""
