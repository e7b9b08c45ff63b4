"""The acceptance test: the demo, driven through the Agents Playground in headless Chromium.

It sees what a responder sees: one card per compromised identity in the incident channel, a
reason typed and "Disable account" clicked, the card turning to "Contained" and the verified
result appearing in the card's thread. Screenshots of each step land in ``SCREENSHOTS_DIR``
(default ``tests/e2e/artifacts``; ``make screenshots`` writes them to ``docs/``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from devtools.demo import PLAYGROUND_BIN, RESPONDER, SECOND_APPROVER_UPN, TEAM, DemoStack

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or Path(__file__).parent / "artifacts")
# The demo tenant's compromised identities and the worst severity of each one's alerts.
EXPECTED_CARDS = {
    "Adele Vance": "HIGH",
    "Megan Bowen": "MEDIUM",
    "Lee Gu": "HIGH",
    "Patrick O'Brien": "MEDIUM",
    "Break Glass": "HIGH",
    "Grady Archie": "HIGH",
}
PROTECTED = "Break Glass"
# Disabled by Defender XDR's automatic attack disruption before anyone acted.
DISRUPTED = "Grady Archie"
# Text an attacker controls: an alert title and link, and a reason typed on a card.
HOSTILE_TITLE = "[Open the portal](https://evil.io/login) <b>urgent</b> www.evil.com"
HOSTILE_REASON = "[click](https://evil.io) <at>Megan Bowen</at> # not a heading **not bold**"


def _missing() -> str:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"Chromium ({CHROMIUM}; apt-get install chromium)")
    if not PLAYGROUND_BIN.exists():
        missing.append(f"the Agents Playground ({PLAYGROUND_BIN}; npm ci)")
    return " and ".join(missing)


@pytest.fixture(params=["botbuilder", "agents"])
async def demo(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[DemoStack]:
    """The demo on each Teams transport in turn (TEAMS_SDK)."""
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(f"the browser test must run here but {missing} is missing")
        pytest.skip(f"browser test not run: {missing} is missing")
    stack = DemoStack(workdir=tmp_path / "demo", bot_port=0, playground_port=0, teams_sdk=request.param)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


@pytest.fixture
async def page(demo: DemoStack) -> AsyncIterator[Page]:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 1300})
        # The Playground's page asks a CDN for fonts; nothing but loopback is reachable here.
        await context.route(
            re.compile(r"^(?!http://(127\.0\.0\.1|localhost)[:/]).*"), lambda route: route.abort()
        )
        tab = await context.new_page()
        tab.set_default_timeout(20_000)
        try:
            yield tab
        finally:
            await browser.close()


async def _shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / name), full_page=False)


async def test_responder_sees_cards_and_disables_an_account(demo: DemoStack, page: Page) -> None:
    await page.goto(demo.playground_url)
    # The Playground's own log panel is not what a responder sees; hide it for the screenshots.
    await page.get_by_role("button", name="Hide log panel").click()
    general = page.get_by_role("treeitem", name=f"{TEAM['name']} - General")
    await general.click()  # the Playground installs the bot in the team now; the cards follow

    posts = page.get_by_role("group").filter(has=page.locator(".ac-adaptiveCard"))
    # One card per identity, and one campaign card for the 25 people of the password spray (it
    # is posted after the case cards).
    await expect(posts).to_have_count(len(EXPECTED_CARDS) + 1, timeout=20_000)
    for name, severity in EXPECTED_CARDS.items():
        card = posts.filter(has_text=name).locator(".ac-adaptiveCard")
        await expect(card).to_have_count(1)
        await expect(card).to_contain_text(f"{severity} · Compromised identity")
        if name == PROTECTED:
            await expect(card).to_contain_text("Protected account: the bot never acts on it")
            await expect(card.get_by_role("button", name="Disable account")).to_have_count(0)
            continue
        if name == DISRUPTED:
            await expect(card.get_by_role("button", name="Disable account")).to_have_count(0)
            continue
        await expect(card.get_by_role("button", name="Disable account")).to_be_visible()
        await expect(card.get_by_role("textbox", name="Reason")).to_be_visible()
    lee = posts.filter(has_text="Lee Gu")
    # Phone first: who, why in one line, the account and the actions; the rest behind a toggle.
    await expect(lee).to_contain_text("Why: 2 alerts")
    await expect(lee).to_contain_text("Enabled, cloud-only")
    await expect(lee).not_to_contain_text("Leaked credentials")
    await expect(lee).not_to_contain_text("Detected by")
    await lee.get_by_role("button", name="Show details").click()
    await expect(lee).to_contain_text("Leaked credentials")
    await expect(lee).to_contain_text("Detected by")
    await expect(lee).to_contain_text("Entra ID Protection")
    await expect(lee).not_to_contain_text("Source")  # one row says where the alerts came from
    adele = posts.filter(has_text="Adele Vance")
    await expect(adele).to_contain_text("Suspected identity theft (pass-the-ticket)")
    await expect(adele).to_contain_text("Defender for Identity")
    await adele.scroll_into_view_if_needed()
    await _shot(page, "01-cards-in-channel.png")

    card = adele.locator(".ac-adaptiveCard")
    reason = card.get_by_role("textbox", name="Reason")
    await reason.click()  # the Playground sends a typed value only after the box was clicked
    await reason.fill("Pass-the-ticket from FIN-SRV-07; containing until reviewed")
    await _shot(page, "02-reason-typed.png")
    await card.get_by_role("button", name="Disable account").click()

    await expect(card).to_contain_text("Contained")
    await expect(card).to_contain_text("Disabled, synced from on-premises AD (read back")
    await expect(card).to_contain_text("Disable account: done")
    await expect(card.get_by_role("button", name="Disable account")).to_have_count(0)
    reply = adele.get_by_text("Disable account succeeded")
    await expect(reply).to_be_visible()
    await expect(adele).to_contain_text(f"Requested by {RESPONDER['name']}")
    await expect(adele).to_contain_text("accountEnabled = false")
    # Adele is synced from on-premises: disabled in Active Directory through Defender for
    # Identity, with the Action Center correlation id in the thread.
    await expect(adele).to_contain_text("Disable in Active Directory (Defender for Identity): ok, verified")
    await expect(adele).to_contain_text("Defender correlation id")
    await expect(adele.get_by_role("link", name="Action Center history")).to_be_visible()
    await reply.evaluate("node => node.scrollIntoView({block: 'center'})")
    await _shot(page, "03-contained-with-thread-reply.png")

    # Lee Gu is cloud-only: revoking sessions goes to Entra ID and is verified by reading back.
    lee_card = lee.locator(".ac-adaptiveCard")
    await expect(lee_card).to_contain_text("cloud-only")
    reason = lee_card.get_by_role("textbox", name="Reason")
    await reason.click()
    await reason.fill("Leaked credentials: cut existing sessions")
    await lee_card.get_by_role("button", name="Revoke sessions").click()
    await expect(lee.get_by_text("Revoke sessions succeeded")).to_be_visible()
    await expect(lee).to_contain_text("Revoke Entra ID sign-in sessions: ok, verified")
    await expect(lee).to_contain_text("signInSessionsValidFromDateTime")
    await lee.get_by_text("Revoke sessions succeeded").evaluate(
        "node => node.scrollIntoView({block: 'center'})"
    )
    await _shot(page, "05-cloud-only-revoke-sessions.png")

    # A privileged target needs a second approver: the card says so and waits.
    patrick = posts.filter(has_text="Patrick O'Brien")
    await expect(patrick).to_contain_text("Privileged:")
    patrick_card = patrick.locator(".ac-adaptiveCard")
    reason = patrick_card.get_by_role("textbox", name="Reason")
    await reason.click()
    await reason.fill("Brute force then success from WS-DUB-22")
    await patrick_card.get_by_role("button", name="Disable account").click()
    await expect(patrick_card).to_contain_text("Disable account: awaiting second approver")
    await expect(patrick_card).to_contain_text(f"an approver other than {RESPONDER['name']}")
    await expect(patrick_card).to_contain_text("Expires")
    # The thread notes the request; everyone sees the same card with Approve, Reject and Cancel
    # (Teams would give the requester and approvers their own view through refresh).
    await expect(patrick.get_by_text("Needs 2 sign-off(s)")).to_be_visible()
    await expect(patrick_card.get_by_role("button", name="Approve")).to_be_visible()
    await expect(patrick_card.get_by_role("button", name="Reject")).to_be_visible()
    await expect(patrick_card.get_by_role("button", name="Cancel request")).to_be_visible()
    # Approving your own request does not count: the refusal is shown on the card.
    await patrick_card.get_by_role("button", name="Approve").click()
    await expect(patrick_card).to_contain_text("a different approver must approve it")
    await patrick.scroll_into_view_if_needed()
    await _shot(page, "04-awaiting-second-approver.png")

    # Automatic attack disruption contained Grady Archie first: the card says so and asks to keep
    # it contained or to roll it back, warning what a roll-back sets off.
    grady = posts.filter(has_text=DISRUPTED)
    grady_card = grady.locator(".ac-adaptiveCard")
    await expect(grady_card).to_contain_text("Already contained automatically at")
    await expect(grady_card).to_contain_text("Microsoft Defender XDR automatic attack disruption")
    await expect(grady_card).to_contain_text("Suspicious account enablement after disruption")
    await expect(grady_card).to_contain_text("Linked accounts (Defender for Identity)")
    await expect(grady_card.get_by_role("button", name="Roll back (re-enable)")).to_be_visible()
    await grady.scroll_into_view_if_needed()
    await _shot(page, "06-contained-automatically.png")
    reason = grady_card.get_by_role("textbox", name="Reason")
    await reason.click()
    await reason.fill("Ransomware from WS-RND-14: keep it contained")
    await grady_card.get_by_role("button", name="Keep contained").click()
    await expect(grady.get_by_text("Keep contained succeeded")).to_be_visible()
    await expect(grady_card).to_contain_text("Kept contained by a responder at")
    await expect(grady).to_contain_text("Check the Entra ID account is disabled: ok, verified")

    assert demo.tenant is not None
    assert demo.tenant.user("grady.archie@contoso.com")["accountEnabled"] is False, "never re-enabled"
    assert demo.tenant.user("patrick.o'brien@contoso.com")["accountEnabled"] is True
    assert demo.tenant.user("adele.vance@contoso.com")["accountEnabled"] is False
    assert demo.tenant.user("lee.gu@contoso.com")["accountEnabled"] is True
    assert demo.tenant.violations == []

    # Text from outside is shown as written and never becomes markup: an alert whose title and
    # portal link an attacker wrote, and a reason full of markdown, HTML and a mention.
    demo.tenant.add_alert(
        {
            "user": "isaiah.langer@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": HOSTILE_TITLE,
            "severity": "high",
            "alertWebUrl": "https://security.microsoft.com.evil.io/alerts/1",
        }
    )
    isaiah = posts.filter(has_text="Isaiah Langer")
    await expect(isaiah).to_have_count(1, timeout=30_000)  # the next poll (every 5 s) posts it
    isaiah_card = isaiah.locator(".ac-adaptiveCard")
    await expect(isaiah_card).to_contain_text(
        "[Open the portal](https[://]evil[.]io/login) <b>urgent</b> www[.]evil[.]com"
    )
    reason = isaiah_card.get_by_role("textbox", name="Reason")
    await reason.click()
    await reason.fill(HOSTILE_REASON)
    await isaiah_card.get_by_role("button", name="Revoke sessions").click()
    # Isaiah is a Security Administrator: the request waits, and its thread note quotes the reason.
    await expect(isaiah_card).to_contain_text("Revoke sessions: awaiting second approver")
    await expect(isaiah.get_by_text("Needs 2 sign-off(s)")).to_be_visible()
    await expect(isaiah).to_contain_text(
        "“[click](https[://]evil[.]io) <at>Megan Bowen</at> # not a heading **not bold**”"
    )
    await expect(page.locator("a[href*='evil']")).to_have_count(0)
    await expect(isaiah.locator("script, h1, h2, h3, b")).to_have_count(0)
    assert demo.tenant.violations == []

    # Storm mode: the password spray's 25 people are one campaign card, not 25 cards.
    campaign = posts.filter(has_text="STORM · Campaign")
    await expect(campaign).to_have_count(1)
    campaign_card = campaign.locator(".ac-adaptiveCard")
    await campaign.evaluate("post => post.scrollIntoView({block: 'start'})")
    await expect(campaign_card).to_contain_text("25 compromised identities")
    await expect(campaign_card).to_contain_text("storm.threshold 20, storm.window 10 minutes")
    await expect(campaign_card).to_contain_text("Alert: Password spray")
    await expect(campaign_card).to_contain_text("Identities 1–10 of 25 (page 1 of 3)")
    await _shot(page, "06-campaign-card.png")
    # Paging is the clicker's own view: the bot answers with the next page.
    await campaign_card.get_by_role("button", name="Next page").click()
    await expect(campaign_card).to_contain_text("Identities 11–20 of 25 (page 2 of 3)")
    await campaign_card.get_by_role("button", name="Next page").click()
    await expect(campaign_card).to_contain_text("Identities 21–25 of 25 (page 3 of 3)")
    await expect(campaign_card.get_by_role("button", name="Next page")).to_have_count(0)
    # A bulk disable of the largest cluster: frozen, past the blast radius under storm.max_bulk,
    # and waiting for a second approver (the Playground has one user).
    reason = campaign_card.get_by_role("textbox", name="Reason")
    await reason.click()
    await reason.fill("One password spray from 198.51.100.23 reached all of them")
    await campaign_card.get_by_role("button", name="Request bulk action").click()
    await expect(campaign_card).to_contain_text("Disable account: awaiting second approver")
    await expect(campaign_card).to_contain_text("25 identities in")
    await expect(campaign_card).to_contain_text("past the limit, allowed by the policy's storm.max_bulk (50)")
    await expect(campaign_card.get_by_role("button", name="Approve bulk action")).to_be_visible()
    # The bulk request's own approval page (the demo has it on): where step-up sign-offs are made.
    page_link = await campaign_card.get_by_role("link", name="Open approval page").get_attribute("title")
    assert page_link is not None
    assert re.fullmatch(rf"{re.escape(demo.bot_url)}/approve/bulk/[0-9a-f]+", page_link), page_link
    # The thread notes the request (its first line, in bold).
    note = campaign.get_by_text("Bulk: Disable account: awaiting second approver", exact=True)
    await expect(note).to_be_visible()
    await campaign.scroll_into_view_if_needed()
    await _shot(page, "07-campaign-bulk-awaiting-second-approver.png")
    assert all(
        demo.tenant.user(f"spray.target{n:02d}@contoso.com")["accountEnabled"] is True for n in range(1, 26)
    ), "nothing runs before the second approval"

    # Megan approves on her phone, on the bulk request's page; the campaign card follows.
    from tests.e2e.test_approval_page import _sign_in  # (that module imports this one)

    browser = page.context.browser
    assert browser is not None
    phone_context = await browser.new_context(
        viewport={"width": 390, "height": 844}, ignore_https_errors=True
    )
    phone = await phone_context.new_page()
    phone.set_default_timeout(20_000)
    await phone.goto(page_link)
    await _sign_in(phone, SECOND_APPROVER_UPN, mfa=True)
    await expect(phone.get_by_role("heading", name="Disable account: 25 identities")).to_be_visible()
    await expect(phone.get_by_text("Target set SHA-256")).to_be_visible()
    await _shot(phone, "10-page-bulk-request.png")
    await phone.get_by_role("button", name="Approve bulk action").click()
    await expect(phone.get_by_role("alert")).to_contain_text("Your approval is recorded.")
    await expect(campaign_card).to_contain_text("25 done · 0 failed", timeout=60_000)
    assert all(
        demo.tenant.user(f"spray.target{n:02d}@contoso.com")["accountEnabled"] is False for n in range(1, 26)
    )
    await phone_context.close()
    assert demo.tenant.violations == []
