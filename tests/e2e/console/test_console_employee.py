"""Employee scenarios in a real Chromium: sign in, ask with a streamed answer, citations,
feedback, documents, and the boundaries (another group's document, CSRF, sign-out)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.console.conftest import ConsoleServer, Shots, sign_in

# Slow: a browser against a server process (skip with -m "not slow").
pytestmark = pytest.mark.slow

ANSWER_TOKENS = ["Employees ", "get ", "25 ", "days ", "of ", "paid ", "annual ", "leave [1]."]


async def test_employee_asks_and_sees_the_answer_stream_with_citations(
    console: ConsoleServer, browser: Browser
) -> None:
    shots = Shots("employee_ask")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, console, "employee")
    await shots.take(page, "ask")
    console.fake.chat.tokens = ANSWER_TOKENS
    # Slow enough that a partial answer is on screen while the stream is still open.
    console.fake.chat.tokens_per_second = 4
    await page.get_by_label("Your question").fill("How many days of annual leave do I get?")
    await page.get_by_role("button", name="Ask").click()
    # Tokens arrive before the answer ends: some text shows while the state is not done.
    partial = await page.wait_for_function(
        """() => {
            const text = document.getElementById('answer').textContent;
            const state = document.getElementById('answer-state').dataset.state;
            return text.length > 0 && state === 'streaming' ? text : null;
        }""",
        timeout=60_000,
    )
    partial_text = await partial.json_value()
    assert "Employees" in partial_text
    assert partial_text != "".join(ANSWER_TOKENS)
    await shots.take(page, "streaming")
    await expect(page.locator("#answer-state")).to_have_attribute(
        "data-state", "done", timeout=60_000
    )
    await expect(page.locator("#answer")).to_have_text("".join(ANSWER_TOKENS))
    source = page.locator("#citations a")
    await expect(source).to_have_count(1)
    await expect(source).to_have_text("Annual leave policy")
    await shots.take(page, "answered")

    # Feedback, as the asker.
    await page.get_by_label("Helpful", exact=True).check()
    await page.get_by_label("Comment (optional)").fill("Clear, thanks")
    await page.get_by_role("button", name="Send feedback").click()
    await expect(page.locator(".feedback-result")).to_have_text(
        "Thank you, your feedback was recorded."
    )

    # The numbered citation in the answer opens the cited passage, title and version.
    await page.locator("#answer a.cite").click()
    await page.wait_for_url("**/answers/*#passage-1")
    passage = page.locator("#passage-1")
    await expect(passage).to_contain_text("Annual leave policy")
    await expect(passage).to_contain_text("version 1")
    await expect(passage).to_contain_text("25 days of paid annual leave")
    await shots.take(page, "passage")
    await context.close()


async def test_nothing_found_is_said_plainly_and_other_groups_stay_invisible(
    console: ConsoleServer, browser: Browser
) -> None:
    shots = Shots("employee_boundaries")
    context = await browser.new_context(
        viewport={"width": 375, "height": 800}, timezone_id="Asia/Tokyo"
    )
    page = await context.new_page()
    await sign_in(page, console, "employee")
    console.fake.chat.tokens = None
    console.fake.chat.tokens_per_second = None
    # The finance group's plan exists, but this employee may not read it.
    await page.get_by_label("Your question").fill("Project Falcon merger valuation finance board")
    await page.get_by_role("button", name="Ask").click()
    await expect(page.locator("#answer-state")).to_have_attribute(
        "data-state", "done", timeout=60_000
    )
    await expect(page.locator("#nothing-found")).to_be_visible()
    await expect(page.locator("#citations li")).to_have_count(0)
    await shots.take(page, "nothing_found")
    body = await page.content()
    assert "Falcon merger plan" not in body

    await page.get_by_role("link", name="Documents").click()
    await expect(page.get_by_role("link", name="Annual leave policy")).to_be_visible()
    assert "Falcon" not in await page.content()
    await shots.take(page, "documents")
    await page.get_by_role("link", name="Annual leave policy").click()
    await expect(page.locator("h1")).to_have_text("Annual leave policy")
    await expect(page.locator("main")).to_contain_text("leave.md")
    await shots.take(page, "document")
    # Straight to the other group's document: not found, as in the API.
    response = await page.goto(f"{console.base}/documents/{console.documents['merger']}")
    assert response is not None
    assert response.status == 404
    assert "Falcon" not in await page.content()

    await page.get_by_role("link", name="My questions").click()
    await expect(page.locator("main")).to_contain_text("Project Falcon merger valuation")
    # Times are shown in the browser's zone (the page carries UTC).
    await expect(page.locator("main time").first).to_contain_text("GMT+9")
    await shots.take(page, "my_questions")
    # No horizontal scrolling at 375 px.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    await context.close()


async def test_form_without_csrf_token_and_signed_out_cookie_are_refused(
    console: ConsoleServer, browser: Browser
) -> None:
    shots = Shots("employee_session")
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, console, "employee")
    # The sign-out form, posted without its token: refused, and still signed in.
    await page.evaluate("document.querySelector('form.signout input[name=csrf_token]').remove()")
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Sign out").click()
    response = await navigation.value
    assert response is not None
    assert response.status == 403
    await expect(page.locator(".error")).to_contain_text("security token")
    await shots.take(page, "csrf_refused")
    await page.goto(f"{console.base}/")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    stolen = [c for c in await context.cookies() if c["name"] == "ragledger_session"]
    assert stolen
    assert stolen[0]["httpOnly"]
    assert stolen[0]["sameSite"] == "Strict"
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/sign-in")
    # The old cookie, put back: the token was revoked, so the console asks to sign in.
    other = await browser.new_context()
    await other.add_cookies(stolen)
    replay = await other.new_page()
    await replay.goto(f"{console.base}/my/questions")
    await replay.wait_for_url("**/sign-in?next=%2Fmy%2Fquestions")
    await shots.take(replay, "signed_out_cookie")
    await other.close()
    await context.close()


async def test_keyboard_only_sign_in_and_ask(console: ConsoleServer, browser: Browser) -> None:
    shots = Shots("keyboard")
    context = await browser.new_context()
    page = await context.new_page()
    console.fake.chat.tokens = None
    console.fake.chat.answer = "You get 25 days [1]."
    await page.goto(f"{console.base}/sign-in")
    # The email field has focus on arrival; from there on, only keys.
    await page.keyboard.type(console.accounts["employee"].email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(console.accounts["employee"].password)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{console.base}/")
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "question":
            break
    else:
        raise AssertionError("the question box cannot be reached with Tab")
    await page.keyboard.type("How many days of annual leave?")
    await page.keyboard.press("Tab")
    focused = await page.evaluate(
        """() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {text: el.textContent, outline: style.outlineStyle, width: style.outlineWidth};
        }"""
    )
    assert focused["text"] == "Ask"
    assert focused["outline"] != "none"
    assert focused["width"] != "0px"
    await shots.take(page, "focus_on_ask")
    await page.keyboard.press("Enter")
    await expect(page.locator("#answer-state")).to_have_attribute(
        "data-state", "done", timeout=60_000
    )
    await expect(page.locator("#answer")).to_have_text("You get 25 days [1].")
    await shots.take(page, "answered")
    await context.close()
