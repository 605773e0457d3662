"""Auditor and admin scenarios in a real Chromium: answers and their story, the ledger,
verification; uploads to indexed (and a bad file's reason), accounts, anomalies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import select

from ragledger.models.ledger import EventRow
from tests.e2e.console.conftest import ConsoleServer, Shots, api_token, sign_in, wait_for
from tests.fixtures_documents import garbage_pdf_bytes

# Slow: a browser against a server process (skip with -m "not slow").
pytestmark = pytest.mark.slow


async def ask(client: httpx.AsyncClient, token: str, question: str) -> str:
    """Ask through the API; the question id once the stream is done."""
    question_id = ""
    async with client.stream(
        "POST",
        "/api/v1/questions",
        headers={"Authorization": f"Bearer {token}"},
        json={"question": question},
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"question_id"' in line:
                question_id = line.split('"question_id": "')[1].split('"')[0]
    return question_id


async def test_auditor_filters_answers_reads_a_story_pages_the_ledger_and_verifies(
    console: ConsoleServer, browser: Browser
) -> None:
    shots = Shots("auditor")
    console.fake.chat.tokens = None
    console.fake.chat.answer = "You get 25 days of paid annual leave [1]."
    async with console.api() as client:
        employee = await api_token(client, console.accounts["employee"])
        auditor = await api_token(client, console.accounts["auditor"])
        answered = await ask(client, employee, "How many days of annual leave do I get?")
        await ask(client, employee, "Project Falcon merger valuation finance board")

        async def projected() -> bool:
            response = await client.get(
                "/api/v1/audit/answers", headers={"Authorization": f"Bearer {auditor}"}
            )
            items = response.json()["items"]
            return len(items) >= 2 and all(i["status"] != "pending" for i in items)

        await wait_for(projected, 60, "the answers to be projected")

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, console, "auditor")
    await page.get_by_role("link", name="Answers").click()
    # The asker filter keeps to this module's employee (the server is shared).
    await page.get_by_label("Asker (email or id)").fill(console.accounts["employee"].email)
    await page.get_by_label("no context").check()
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Project Falcon")
    await expect(rows.first).to_contain_text("no context")
    await shots.take(page, "answers_no_context")
    await page.get_by_role("link", name="Clear").click()
    await page.get_by_label("Asker (email or id)").fill(console.accounts["employee"].email)
    await page.get_by_label("answered", exact=True).check()
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_label("Asker (email or id)")).to_have_value(
        console.accounts["employee"].email
    )
    story_link = page.get_by_role("link", name="How many days of annual leave do I get?").first
    await story_link.click()
    await page.wait_for_url(f"**/audit/answers/{answered}")
    context_list = page.locator("#context")
    await expect(context_list.locator("li").first).to_contain_text("Annual leave policy")
    await expect(context_list.locator("li").first).to_contain_text("text checked")
    await expect(context_list.locator("li").first).to_contain_text("fused score")
    await expect(context_list.locator("li").first).to_contain_text("25 days of paid annual leave")
    await expect(page.locator("main")).to_contain_text("rebuilt and matches")
    await expect(page.locator("main")).to_contain_text("AnswerGenerated")
    await shots.take(page, "story")

    # The cited document's history lists the answer that used it.
    await page.goto(f"{console.base}/audit/documents/{console.documents['leave']}")
    await expect(page.locator("main")).to_contain_text("Answers that used it (1)")
    await expect(page.locator(f'main a[href="/audit/answers/{answered}"]')).to_have_count(1)
    await expect(page.locator("#all-answers")).to_have_count(0)  # all are listed
    await shots.take(page, "document_history")

    # The ledger, five events a page: the next page continues below the first.
    await page.goto(f"{console.base}/audit/ledger?size=5")
    first_page = await page.locator("#events tbody tr td:first-child").all_inner_texts()
    assert len(first_page) == 5
    await shots.take(page, "ledger")
    await page.get_by_role("link", name="Next →").click()
    second_page = await page.locator("#events tbody tr td:first-child").all_inner_texts()
    assert len(second_page) == 5
    assert int(second_page[0]) == int(first_page[-1]) - 1
    await page.get_by_role("link", name=second_page[0], exact=True).click()
    await expect(page.locator("h1")).to_have_text(f"Event {second_page[0]}")
    await expect(page.locator("#canonical")).to_contain_text('"prev_hash"')
    await shots.take(page, "event")

    await page.get_by_role("link", name="Integrity").click()
    await page.get_by_role("button", name="Run verification").click()
    await expect(page.locator("#verification")).to_contain_text("Valid:")
    await shots.take(page, "integrity")
    await context.close()

    # Each page view was recorded, as the API records its reads.
    async with console.db.sessionmaker() as session:
        rows_ = await session.scalars(select(EventRow).where(EventRow.event_type == "AuditViewed"))
        views = [
            r.payload["view"]
            for r in rows_
            if r.payload["auditor_id"] == str(console.accounts["auditor"].id)
        ]
        verified = await session.scalar(
            select(EventRow).where(EventRow.event_type == "LedgerVerified")
        )
    assert {"answers", "answer", "document_history", "events", "integrity"} <= set(views)
    assert verified is not None


async def test_admin_uploads_creates_a_user_and_acknowledges_an_anomaly(
    console: ConsoleServer, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots("admin")
    files = []
    for name, content in (
        ("expenses.md", b"# Expenses\n\nMeals are reimbursed up to the daily allowance.\n"),
        ("remote.md", b"# Remote work\n\nEmployees may work remotely two days a week.\n"),
        ("broken.pdf", garbage_pdf_bytes()),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        files.append(str(path))
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, console, "admin")
    await page.get_by_role("link", name="Manage documents").click()
    await page.get_by_label("Files (PDF").set_input_files(files)
    await page.get_by_label("Groups that may read them").fill(console.groups["hr"])
    await page.get_by_role("button", name="Upload").click()
    uploads = page.locator("#uploads li")
    await expect(uploads).to_have_count(3)
    await expect(page.locator('#uploads li[data-state="ok"]')).to_have_count(2, timeout=180_000)
    failed = page.locator('#uploads li[data-state="error"]')
    await expect(failed).to_have_count(1, timeout=180_000)
    await expect(failed).to_contain_text("broken.pdf")
    await expect(failed).to_contain_text("failed:")
    await shots.take(page, "uploads")
    await page.reload()
    await expect(page.locator("#documents")).to_contain_text("remote.md")
    await expect(page.locator("#documents")).to_contain_text("startxref not found")

    # A new account; a bad one first: the error says why and the input stays.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_text("Create an account").click()
    nora = f"nora.{console.tag}@example.com"
    await page.get_by_label("Email", exact=True).fill(nora)
    await page.get_by_label("Initial password").fill("short")
    await page.get_by_label("Role", exact=True).select_option("auditor")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator(".error")).to_contain_text("password")
    await expect(page.get_by_label("Email", exact=True)).to_have_value(nora)
    await page.get_by_label("Initial password").fill("a much longer passphrase 42")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator(".ok")).to_contain_text(f"Created {nora} (auditor)")
    await expect(page.locator(f'#users tr[data-email="{nora}"]')).to_be_visible()
    await shots.take(page, "users")

    # Repeated failed logins raise an anomaly; acknowledge it.
    async with console.api() as client:
        for _ in range(6):
            await client.post(
                "/api/v1/auth/jwt/login",
                data={
                    "username": f"ghost.{console.tag}@example.com",
                    "password": "not the password",
                },
            )

    async def anomaly_listed() -> bool:
        await page.goto(f"{console.base}/admin/anomalies")
        return await page.locator('li[data-rule="repeated_auth_failures"]').count() > 0

    await wait_for(anomaly_listed, 90, "the anomaly to be listed", interval=1)
    item = page.locator('li[data-rule="repeated_auth_failures"]').first
    await expect(item).to_contain_text("open")
    await item.get_by_label("Note (optional)").fill("Known test account")
    await item.get_by_role("button", name="Acknowledge").click()

    # The inbox is the anomalies projection: it shows the acknowledgement once the
    # runner has applied the event (on a loaded box, after the redirect has rendered).
    async def acknowledged() -> bool:
        await page.goto(f"{console.base}/admin/anomalies")
        first = page.locator('li[data-rule="repeated_auth_failures"]').first
        return "acknowledged" in (await first.inner_text())

    await wait_for(acknowledged, 60, "the acknowledgement to be listed", interval=1)
    item = page.locator('li[data-rule="repeated_auth_failures"]').first
    await expect(item).to_contain_text("acknowledged")
    await expect(item).to_contain_text("Known test account")
    await shots.take(page, "anomalies")

    await page.get_by_role("link", name="Status").click()
    await expect(page.locator("#subscribers tbody tr").first).to_be_visible()
    await shots.take(page, "status")
    await context.close()


async def test_admin_uploads_a_new_version_and_retracts_a_document(
    console: ConsoleServer, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots("admin_versions")
    leave, merger = console.documents["leave"], console.documents["merger"]
    revised = tmp_path / "leave-2027.md"
    revised.write_text(
        "# Annual leave policy\n\nFrom 2027 employees get 27 days of paid annual leave.\n"
    )
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, console, "admin")
    await page.get_by_role("link", name="Manage documents").click()
    row = page.locator(f'#documents tr[data-document-id="{leave}"]')
    await expect(row.locator('td[data-label="Version"]')).to_have_text("1")
    # The row's file picker posts the file as the document's next version.
    await row.get_by_label("New version").set_input_files(str(revised))
    upload = page.locator("#uploads li").filter(has_text="leave-2027.md")
    await expect(upload).to_have_attribute("data-state", "ok", timeout=180_000)
    # "ok" is the upload's acceptance; the list shows the documents projection, which
    # applies the new version a moment later: reload until it has (it raced in CI).
    version = row.locator('td[data-label="Version"]')
    for _ in range(60):
        await page.reload()
        if (await version.text_content() or "").strip() == "2":
            break
        await asyncio.sleep(0.5)
    await expect(version).to_have_text("2")
    # Kept its groups (a new version sent without groups keeps them).
    await expect(row.locator('input[name="groups"]')).to_have_value(console.groups["hr"])
    await shots.take(page, "new_version")

    # Retract asks first: dismissed, nothing happens; accepted, the document is retracted.
    target = page.locator(f'#documents tr[data-document-id="{merger}"]')
    page.once("dialog", lambda dialog: dialog.dismiss())
    await target.get_by_role("button", name="Retract").click()
    await expect(target.locator('td[data-label="Status"]')).to_have_text("indexed")
    page.once("dialog", lambda dialog: dialog.accept())
    async with page.expect_navigation():
        await target.get_by_role("button", name="Retract").click()
    await expect(target.locator('td[data-label="Status"]')).to_have_text("retracted")
    await expect(target.get_by_role("button", name="Retract")).to_have_count(0)
    await shots.take(page, "retracted")
    await context.close()

    async with console.api() as client:
        token = await api_token(client, console.accounts["admin"])
        response = await client.get(
            f"/api/v1/documents/{merger}", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 404, response.text
    async with console.db.sessionmaker() as session:
        kinds = list(
            await session.scalars(
                select(EventRow.event_type).where(
                    EventRow.stream_id.in_([f"document-{leave}", f"document-{merger}"])
                )
            )
        )
    assert kinds.count("DocumentUploaded") == 3
    assert kinds.count("DocumentRetracted") == 1
