"""The approval page through the real app and the sandbox's real sign-in: a second approver
decides on the page, the card follows, and every hostile request is refused writing nothing."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from bot.web.app import STORE
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, SECOND_RESPONDER, Clock, write_policy
from tests.scenario.test_approvals import Channel, card_text
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, free_port
from tests.support.pagebrowser import PageBrowser, form_fields

ALEX_UPN = "alex.wilber@contoso.com"
MEGAN_UPN = "megan.admin@contoso.com"
ADELE = "adele.vance@contoso.com"
SESSION = "__Host-rb-approval"


class Page:
    """The bot with its approval page on, the incident channel, and people's browsers."""

    def __init__(self, bot: BotHarness, channel: Channel, tenant: SandboxTenant) -> None:
        self.bot = bot
        self.channel = channel
        self.tenant = tenant
        self.browsers: list[PageBrowser] = []

    def browser(self) -> PageBrowser:
        browser = PageBrowser(self.bot.url, self.tenant)
        self.browsers.append(browser)
        return browser

    async def path_of(self, upn: str) -> str:
        return f"/approve/{(await self.bot.case_of(upn)).id}"

    async def audit(self) -> list[Any]:
        return await self.bot.app[STORE].list_audit()


def page_link(card: dict[str, Any]) -> str | None:
    for action in card.get("actions", []):
        if action.get("type") == "Action.OpenUrl" and action.get("title") == "Open approval page":
            return str(action["url"])
    return None


@pytest.fixture
async def make_page(
    tenant: SandboxTenant,
    connector: RecordingConnector,
    make_settings: Callable[..., Settings],
    clock: Clock,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Page] = []

    async def make(**policy: Any) -> Page:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        tenant.add_redirect_uri(f"{base}/approve/callback")
        settings = make_settings(
            approval_page_url=base,
            policy_file=str(write_policy(tmp_path / "page-policy.yaml", **policy)),
        )
        bot = BotHarness(settings, clock, port=port)
        await bot.start()
        channel = Channel(bot, connector, tenant)
        await channel.open()
        page = Page(bot, channel, tenant)
        started.append(page)
        return page

    yield make
    for page in started:
        for browser in page.browsers:
            await browser.close()
        await page.bot.stop()


@pytest.mark.asyncio
async def test_second_approver_approves_on_the_page_and_the_card_follows(
    make_page: Callable[..., Any],
) -> None:
    page = await make_page(approvals={"disableAccount": 2})
    channel = page.channel
    # Alex asks on the card in Teams; the card links to the page.
    await channel.click("Adele Vance", RESPONDER, "disableAccount", reason="Pass-the-ticket from FIN-SRV-07")
    link = page_link(channel.current_card("Adele Vance"))
    assert link == f"{page.bot.url}{await page.path_of(ADELE)}"

    megan = page.browser()
    shown = await megan.sign_in(link.removeprefix(page.bot.url), MEGAN_UPN)

    assert shown.status_code == 200
    assert "Adele Vance" in shown.text
    assert "Disable account: awaiting second approver" in shown.text
    assert "Pass-the-ticket from FIN-SRV-07" in shown.text
    decided = await megan.post_form(link.removeprefix(page.bot.url), form_fields(shown.text, "approve"))
    await page.bot.service.drain()

    assert decided.status_code == 200, decided.text
    assert str(decided.url).endswith("?done=approve")  # a GET: reloading never posts again
    assert "Your approval is recorded." in decided.text
    assert page.tenant.user(ADELE)["accountEnabled"] is False
    card = channel.current_card("Adele Vance")
    assert "Disable account: done" in card_text(card)
    assert any("Megan Bowen" in line for line in channel.thread("Adele Vance"))
    approved = [e for e in await page.audit() if e.kind == "request.approved"]
    assert len(approved) == 1
    assert approved[0].actor_id == SECOND_RESPONDER["id"]
    assert approved[0].payload["authentication"]["method"] == "sign-in"
    assert approved[0].payload["authentication"]["amr"] == ["pwd", "mfa"]
    assert len(approved[0].payload["facts_sha256"]) == 64
    opened = [e for e in await page.audit() if e.kind == "request.opened"]
    assert opened[0].payload["authentication"] == {"method": "teams-click"}
    # The page shows the outcome too.
    again = await megan.open(link.removeprefix(page.bot.url))
    assert "Disable account: done" in again.text


@pytest.mark.asyncio
async def test_a_responder_can_request_on_the_page_and_the_card_shows_it(
    make_page: Callable[..., Any],
) -> None:
    page = await make_page(approvals={"disableAccount": 2})
    alex = page.browser()
    path = await page.path_of(ADELE)
    shown = await alex.sign_in(path, ALEX_UPN)
    fields = form_fields(shown.text, "disableAccount")
    fields["reason"] = "Ticket reuse"

    answer = await alex.post_form(path, fields)
    await page.bot.service.drain()

    assert answer.status_code == 200, answer.text
    assert "Disable account: awaiting second approver" in card_text(page.channel.current_card("Adele Vance"))
    # The stale form (the case moved on) does nothing more.
    stale = await alex.post_form(path, fields)
    assert stale.status_code == 409
    assert "out of date" in stale.text


@pytest.mark.asyncio
async def test_signed_out_visitors_see_nothing_and_strangers_get_the_same_404(
    make_page: Callable[..., Any],
) -> None:
    page = await make_page()
    path = await page.path_of(ADELE)
    visitor = page.browser()

    first = await visitor.request("GET", f"{page.bot.url}{path}")
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/approve/signin?case=")
    assert "Adele" not in first.text

    adele = page.browser()  # a person of the tenant who is neither responder nor approver
    theirs = await adele.sign_in(path, ADELE)
    missing = await adele.open("/approve/000000000000")
    alex = page.browser()
    await alex.sign_in(path, ALEX_UPN)
    nothing = await alex.open("/approve/000000000000")

    assert theirs.status_code == missing.status_code == nothing.status_code == 404
    assert theirs.text == missing.text == nothing.text
    assert "Adele Vance" not in theirs.text


@pytest.mark.asyncio
async def test_every_answer_carries_the_security_headers_and_the_session_cookie_is_locked_down(
    make_page: Callable[..., Any],
) -> None:
    page = await make_page()
    alex = page.browser()
    shown = await alex.sign_in(await page.path_of(ADELE), ALEX_UPN)
    missing = await alex.open("/approve/no-such-case")

    for answer in (shown, missing):
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
    assert "<script" not in shown.text
    session = next(c for c in alex.set_cookies if c.name == SESSION and c.value)
    assert {"secure", "httponly"} <= session.flags
    assert session.attributes["samesite"] == "Strict"
    assert session.attributes["path"] == "/"
    assert "domain" not in session.attributes
    assert 0 < int(session.attributes["max-age"]) <= 3600


@pytest.mark.asyncio
async def test_signing_out_forgets_the_session(make_page: Callable[..., Any]) -> None:
    page = await make_page()
    path = await page.path_of(ADELE)
    alex = page.browser()
    shown = await alex.sign_in(path, ALEX_UPN)
    csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
    assert csrf

    without = await alex.post_form("/approve/signout", {"csrf": "0" * 64})
    out = await alex.request("POST", f"{page.bot.url}/approve/signout", data={"csrf": csrf.group(1)})

    assert without.status_code == 403
    assert out.status_code == 303 and out.headers["Location"] == "/approve/signed-out"
    cleared = [c for c in alex.set_cookies if c.name == SESSION][-1]
    assert cleared.value == "" and "secure" in cleared.flags and cleared.attributes["max-age"] == "0"
    assert SESSION not in alex.cookies
    again = await alex.request("GET", f"{page.bot.url}{path}")
    assert again.status_code == 302


@pytest.mark.asyncio
async def test_forged_and_tampered_requests_are_refused_and_write_nothing(
    make_page: Callable[..., Any],
) -> None:
    page = await make_page(approvals={"disableAccount": 2})
    await page.channel.click("Adele Vance", RESPONDER, "disableAccount", reason="Ticket reuse")
    path = await page.path_of(ADELE)
    megan = page.browser()
    shown = await megan.sign_in(path, MEGAN_UPN)
    good = form_fields(shown.text, "approve")
    before = len(await page.audit())
    url = f"{page.bot.url}{path}"

    no_csrf = await megan.post_form(path, {k: v for k, v in good.items() if k != "csrf"})
    wrong_csrf = await megan.post_form(path, {**good, "csrf": "0" * 64})
    other_site = await megan.post_form(path, good, Origin="https://evil.example")
    huge = await megan.post_form(path, {**good, "reason": "x" * 20_000})
    long_note = await megan.post_form(path, {**good, "reason": "x" * 501})
    unknown_field = await megan.post_form(path, {**good, "target": "someone-else"})
    unknown_verb = await megan.post_form(path, {**good, "verb": "deleteTenant"})
    bad_utf8 = await megan.request(
        "POST",
        url,
        content=b"csrf=" + good["csrf"].encode() + b"&verb=approve&reason=%ff%fe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    nul = await megan.post_form(path, {**good, "reason": "a\x00b"})
    as_json = await megan.request("POST", url, json=good)
    anonymous = page.browser()
    signed_out = await anonymous.post_form(path, good)
    forger = page.browser()
    forger.cookies[SESSION] = megan.cookies[SESSION][:-8] + "AAAAAAAA"
    forged = await forger.post_form(path, good)
    forger.cookies[SESSION] = megan.cookies[SESSION][:-8] + "AAAAAAAA"
    forged_view = await forger.request("GET", url)

    assert no_csrf.status_code == 403 and wrong_csrf.status_code == 403
    assert other_site.status_code == 403
    assert huge.status_code == 413
    assert long_note.status_code == 400
    assert unknown_field.status_code == 400 and unknown_verb.status_code == 400
    assert bad_utf8.status_code == 400 and nul.status_code == 400
    assert as_json.status_code == 415
    assert signed_out.status_code == 401
    assert forged.status_code == 401 and forged_view.status_code == 401
    assert "Adele" not in forged_view.text
    assert len(await page.audit()) == before
    assert page.tenant.user(ADELE)["accountEnabled"] is True
    assert "awaiting second approver" in card_text(page.channel.current_card("Adele Vance"))


@pytest.mark.asyncio
async def test_a_sign_in_from_another_tenant_or_a_replayed_callback_gets_no_session(
    make_page: Callable[..., Any],
) -> None:
    page = await make_page()
    path = await page.path_of(ADELE)
    stranger = page.browser()

    # Fabrikam's Megan Bowen has the same object id as an approver here; her tenant is not ours.
    answer = await stranger.sign_in(path, "megan.bowen@fabrikam.example")

    assert answer.status_code == 403
    assert "another organisation" in answer.text
    assert SESSION not in stranger.cookies
    # A callback without the sign-in it belongs to (no flow cookie, made-up state) is refused.
    replay = await page.browser().post_form("/approve/callback", {"code": "abc", "state": "xyz"})
    assert replay.status_code == 400


@pytest.mark.asyncio
async def test_step_up_refuses_teams_clicks_and_password_only_sign_ins_until_a_fresh_mfa(
    make_page: Callable[..., Any],
) -> None:
    # One sign-off is enough here, so the requester's own click is the one that lets it run.
    page = await make_page(
        approvals={"disableAccount": 1},
        step_up={"context": "c1", "max_age_minutes": 10, "when": {"actions": ["disableAccount"]}},
    )
    channel = page.channel
    # In Teams: refused with the way to the page; nothing is stored.
    refused = await channel.click("Adele Vance", RESPONDER, "disableAccount", reason="Ticket reuse")
    text = card_text(refused["value"])
    assert "Open approval page" in text and "MFA" in text
    assert "Disable account" not in card_text(channel.current_card("Adele Vance")).split("Why:")[0]
    assert page.tenant.user(ADELE)["accountEnabled"] is True

    path = await page.path_of(ADELE)
    case_id = path.rsplit("/", 1)[1]
    alex = page.browser()
    weak = await alex.sign_in(path, ALEX_UPN, mfa=False)
    assert "Sign in again with MFA" in weak.text
    fields = {**form_fields(weak.text, "disableAccount"), "reason": "Ticket reuse"}
    no_mfa = await alex.post_form(path, fields)
    assert no_mfa.status_code == 403
    assert "does not provide it" in htmllib.unescape(no_mfa.text)
    assert page.tenant.user(ADELE)["accountEnabled"] is True

    strong = await alex.sign_in(f"/approve/signin?case={case_id}&step_up=1", ALEX_UPN)
    assert "Sign in again with MFA" not in strong.text
    fields = {**form_fields(strong.text, "disableAccount"), "reason": "Ticket reuse"}
    opened = await alex.post_form(path, fields)
    await page.bot.service.drain()
    assert opened.status_code == 200, opened.text
    assert page.tenant.user(ADELE)["accountEnabled"] is False
    event = next(e for e in await page.audit() if e.kind == "request.opened")
    assert event.payload["authentication"]["acrs"] == ["c1"]
    assert "mfa" in event.payload["authentication"]["amr"]
    refusals = [e for e in await page.audit() if e.kind == "request.refused"]
    assert len(refusals) == 2 and all(e.payload["step_up_context"] == "c1" for e in refusals)
    assert [e.payload["authentication"]["method"] for e in refusals] == ["teams-click", "sign-in"]


@pytest.mark.asyncio
async def test_on_a_privileged_account_the_second_approval_needs_a_fresh_mfa(
    make_page: Callable[..., Any], clock: Clock, tenant: SandboxTenant
) -> None:
    page = await make_page(
        approvals={"disableAccount": 2},
        step_up={"context": "c1", "max_age_minutes": 10, "when": {"actions": ["disableAccount"]}},
    )
    channel = page.channel
    # Asking in Teams is fine: Alex's sign-off alone does not let it run.
    await channel.click("Adele Vance", RESPONDER, "disableAccount", reason="Ticket reuse")
    assert "awaiting second approver" in card_text(channel.current_card("Adele Vance"))
    refused = await channel.click("Adele Vance", SECOND_RESPONDER, "approve")
    assert "Open approval page" in card_text(refused["value"])

    path = await page.path_of(ADELE)
    case_id = path.rsplit("/", 1)[1]
    megan = page.browser()
    shown = await megan.sign_in(f"/approve/signin?case={case_id}&step_up=1", MEGAN_UPN)
    clock.now += timedelta(minutes=11)
    stale = await megan.post_form(path, form_fields(shown.text, "approve"))
    assert stale.status_code == 403
    assert page.tenant.user(ADELE)["accountEnabled"] is True

    fresh = await megan.sign_in(f"/approve/signin?case={case_id}&step_up=1", MEGAN_UPN)
    approved = await megan.post_form(path, form_fields(fresh.text, "approve"))
    await page.bot.service.drain()
    assert approved.status_code == 200, approved.text
    assert page.tenant.user(ADELE)["accountEnabled"] is False
    assert "Disable account: done" in card_text(channel.current_card("Adele Vance"))


@pytest.mark.asyncio
async def test_without_a_page_url_cards_have_no_link_and_the_page_does_not_exist(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    channel = Channel(bot, connector, tenant)
    await channel.open()

    assert page_link(channel.current_card("Adele Vance")) is None
    browser = PageBrowser(bot.url, tenant)
    try:
        answer = await browser.request("GET", f"{bot.url}/approve/{(await bot.case_of(ADELE)).id}")
    finally:
        await browser.close()
    assert answer.status_code == 404
