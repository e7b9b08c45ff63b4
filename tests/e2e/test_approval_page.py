"""The acceptance test of the approval page: a two-person approval from a phone, in Chromium.

Alex Wilber asks in the Playground (Teams) to disable Patrick O'Brien, a Helpdesk Administrator;
the demo policy wants two approvers and, for the approval, a fresh MFA sign-in (authentication
context c1). Megan Bowen opens the card's "Open approval page" link on a phone (390×844), signs in
on the sandbox tenant's sign-in pages, is refused while she has signed in without MFA, signs in
again with MFA and approves; the Playground card turns to executed and the thread has the
verified result. A form post without its CSRF token, a forged session cookie and a person of
another tenant are refused. Screenshots land in ``SCREENSHOTS_DIR`` like the Playground test's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from devtools.demo import SECOND_APPROVER_UPN, TEAM, DemoStack
from devtools.sandbox.signin import DEMO_MFA_CODE, DEMO_PASSWORD
from tests.e2e.test_playground import CHROMIUM, CHROMIUM_ARGS, SHOTS, _missing

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
PATRICK = "Patrick O'Brien"
SESSION = "__Host-rb-approval"
# Only this machine: the Playground, the bot (http) and the sandbox tenant (https) on loopback.
LOOPBACK = re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*")


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[DemoStack]:
    missing = _missing()
    if missing:
        import os

        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(f"the browser test must run here but {missing} is missing")
        pytest.skip(f"browser test not run: {missing} is missing")
    stack = DemoStack(workdir=tmp_path / "demo", bot_port=0, playground_port=0)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def _context(browser: Browser, viewport: dict[str, int]) -> BrowserContext:
    # The sandbox tenant's certificate comes from a CA made for this run.
    context = await browser.new_context(viewport=viewport, ignore_https_errors=True)
    await context.route(LOOPBACK, lambda route: route.abort())
    return context


async def _phone(browser: Browser) -> Page:
    context = await _context(browser, PHONE)
    tab = await context.new_page()
    tab.set_default_timeout(20_000)
    return tab


async def _sign_in(tab: Page, login: str, *, mfa: bool) -> None:
    """On the sandbox's sign-in pages: account, password, then MFA (or skip it)."""
    await expect(tab.get_by_role("heading", name="Sign in")).to_be_visible()
    await tab.get_by_label("Email or username").fill(login)
    await tab.get_by_label("Password").fill(DEMO_PASSWORD)
    await tab.get_by_role("button", name="Sign in").click()
    await expect(tab.get_by_role("heading", name="Verify your identity")).to_be_visible()
    if mfa:
        await tab.get_by_label("Code").fill(DEMO_MFA_CODE)
        await tab.get_by_role("button", name="Verify").click()
    else:
        await tab.get_by_role("button", name="Skip (password only)").click()


async def _shot(tab: Page, name: str) -> None:
    await tab.screenshot(path=str(SHOTS / name), full_page=True)


async def test_second_approver_approves_from_a_phone_with_mfa(demo: DemoStack, browser: Browser) -> None:
    assert demo.tenant is not None
    # Alex asks in the Playground.
    teams = await _context(browser, {"width": 1280, "height": 1300})
    playground = await teams.new_page()
    playground.set_default_timeout(20_000)
    await playground.goto(demo.playground_url)
    await playground.get_by_role("button", name="Hide log panel").click()
    await playground.get_by_role("treeitem", name=f"{TEAM['name']} - General").click()
    posts = playground.get_by_role("group").filter(has=playground.locator(".ac-adaptiveCard"))
    patrick = posts.filter(has_text=PATRICK)
    card = patrick.locator(".ac-adaptiveCard")
    await expect(card).to_contain_text("Privileged:")
    reason = card.get_by_role("textbox", name="Reason")
    await reason.click()
    await reason.fill("Brute force then success from WS-DUB-22")
    await card.get_by_role("button", name="Disable account").click()
    await expect(card).to_contain_text("Disable account: awaiting second approver")

    # The card's link to the page.
    button = card.get_by_role("link", name="Open approval page")
    link = await button.get_attribute("title")  # the Playground shows an OpenUrl's URL as its title
    assert link is not None and re.fullmatch(rf"{re.escape(demo.bot_url)}/approve/[0-9a-f]+", link), link
    async with teams.expect_page() as opened:
        await button.click()
    popup = await opened.value
    # Signed out, the link leads to Entra ID's sign-in (here the sandbox's) before anything else.
    await expect(popup.get_by_role("heading", name="Sign in")).to_be_visible()
    await popup.close()

    # Megan on her phone: signed in without MFA, the approval is refused.
    phone = await _phone(browser)
    await phone.goto(link)
    await _sign_in(phone, SECOND_APPROVER_UPN, mfa=False)
    await expect(phone.get_by_role("heading", name=PATRICK)).to_be_visible()
    await expect(phone.get_by_text("Disable account: awaiting second approver")).to_be_visible()
    await expect(phone.get_by_text("Fresh sign-in needed")).to_be_visible()
    await phone.get_by_role("button", name="Approve").click()
    await expect(phone.get_by_role("alert")).to_contain_text("this sign-in does not provide it")
    assert demo.tenant.user("patrick.o'brien@contoso.com")["accountEnabled"] is True

    # Signed in again with MFA, her approval counts and the action runs.
    await phone.get_by_role("link", name="Sign in again with MFA").click()
    await _sign_in(phone, SECOND_APPROVER_UPN, mfa=True)
    await expect(phone.get_by_role("heading", name=PATRICK)).to_be_visible()
    await expect(phone.get_by_text("Fresh sign-in needed")).to_have_count(0)
    await expect(phone.get_by_text("with MFA, authentication context c1")).to_be_visible()
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px phone"
    await _shot(phone, "07-page-approve-with-mfa.png")
    await phone.get_by_role("button", name="Approve").click()
    await expect(phone.get_by_role("alert")).to_contain_text("Your approval is recorded.")

    # The Playground card follows: executed and verified, with the result in its thread.
    await expect(card).to_contain_text("Disable account: done", timeout=30_000)
    await expect(card).to_contain_text("Contained")
    await expect(patrick.get_by_text("Disable account succeeded")).to_be_visible()
    await expect(patrick).to_contain_text("accountEnabled = false")
    assert demo.tenant.user("patrick.o'brien@contoso.com")["accountEnabled"] is False
    await phone.reload()
    await expect(phone.get_by_text("Disable account: done")).to_be_visible()
    await _shot(phone, "08-page-after-approval.png")
    await patrick.get_by_text("Disable account succeeded").evaluate(
        "n => n.scrollIntoView({block: 'center'})"
    )
    await _shot(playground, "09-card-after-page-approval.png")

    # A form post without its CSRF token: refused, nothing changes.
    csrf_less = await phone.request.post(link, form={"verb": "approve", "version": "1", "reason": ""})
    assert csrf_less.status == 403

    # A forged session cookie: refused, nothing shown.
    forger = await _phone(browser)
    cookies = await phone.context.cookies(demo.bot_url)
    session = next(c for c in cookies if c["name"] == SESSION)
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    await forger.context.add_cookies([{**session, "value": session["value"][:-8] + "AAAAAAAA"}])
    forged = await forger.goto(link)
    assert forged is not None and forged.status == 401
    await expect(forger.get_by_text(PATRICK)).to_have_count(0)

    # Someone of another tenant (with the object id of our approver): no session.
    stranger = await _phone(browser)
    await stranger.goto(link)
    await _sign_in(stranger, "megan.bowen@fabrikam.example", mfa=True)
    await expect(stranger.get_by_text("another organisation")).to_be_visible()
    assert SESSION not in {c["name"] for c in await stranger.context.cookies(demo.bot_url)}
    await expect(stranger.get_by_text(PATRICK)).to_have_count(0)
    assert demo.tenant.violations == []
