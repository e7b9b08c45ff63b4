"""Step-up MFA on bulk sign-offs, through the real app and the sandbox's real sign-in: a Teams
click on a bulk approval the policy's step_up covers is refused with the way to the approval
page; the page shows the bulk request and takes the approval with a fresh MFA sign-in; a sign-in
without it, and every hostile form, is refused writing nothing."""

from __future__ import annotations

import html as htmllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from bot.domain.models import RequestState
from bot.web.app import STORE
from devtools.sandbox import SandboxTenant
from tests.conftest import Clock, write_policy
from tests.scenario.test_storm import (  # noqa: F401 (tenant: the storm's sandbox fixture)
    ALEX,
    MEGAN,
    ROOMY,
    SPRAYED,
    Storm,
    _user,
    card_text,
    tenant,
)
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, free_port
from tests.support.pagebrowser import PageBrowser, form_fields

ALEX_UPN = "alex.wilber@contoso.com"
MEGAN_UPN = "megan.admin@contoso.com"
STEP_UP = {"context": "c1", "max_age_minutes": 10, "when": {"actions": ["disableAccount"]}}


class PageStorm(Storm):
    """A storm with the approval page on, and people's browsers."""

    browsers: list[PageBrowser]

    def browser(self) -> PageBrowser:
        browser = PageBrowser(self.bot.url, self.tenant)
        self.browsers.append(browser)
        return browser

    async def bulk(self) -> Any:
        bulk = await self.bot.app[STORE].get_bulk(await self.latest_bulk_id())
        assert bulk is not None
        return bulk

    async def audit(self) -> list[Any]:
        return await self.bot.app[STORE].list_audit()


def page_links(card: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.OpenUrl" and node.get("title") == "Open approval page":
                found.append(str(node["url"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


@pytest.fixture
async def page_storm(
    make_settings: Callable[..., Settings],
    clock: Clock,
    tenant: SandboxTenant,  # noqa: F811 (pytest passes the fixture imported above)
    connector: RecordingConnector,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[PageStorm] = []

    async def start(**policy: Any) -> PageStorm:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        tenant.add_redirect_uri(f"{base}/approve/callback")
        settings = make_settings(
            policy_file=str(write_policy(tmp_path / "storm-page-policy.yaml", **policy)),
            card_update_coalesce_seconds=0,
            approval_page_url=base,
        )
        harness = BotHarness(settings, clock, port=port)
        await harness.start()
        storm = PageStorm(harness, connector, tenant)
        storm.browsers = []
        started.append(storm)
        await storm.open()
        return storm

    yield start
    for storm in started:
        for browser in storm.browsers:
            await browser.close()
        await storm.bot.stop()


async def _requested(page_storm: Callable[..., Any], **policy: Any) -> tuple[PageStorm, str]:
    storm: PageStorm = await page_storm(**ROOMY, step_up=STEP_UP, **policy)
    # Asking in Teams is fine: Alex's sign-off alone never lets a bulk action run.
    answer = await storm.request_bulk(ALEX)
    assert "awaiting second approver" in card_text(answer["value"])
    bulk = await storm.bulk()
    path = f"/approve/bulk/{bulk.id}"
    assert page_links(storm.campaign_card()) == [f"{storm.bot.url}{path}"]
    return storm, path


@pytest.mark.asyncio
async def test_a_teams_click_on_a_bulk_approval_needing_step_up_is_refused_with_the_page_link(
    page_storm: Callable[..., Any],
) -> None:
    storm, path = await _requested(page_storm)
    bulk = await storm.bulk()

    refused = await storm.click(MEGAN, "bulkApprove", {"bulkId": bulk.id})

    text = card_text(refused["value"])
    assert "MFA" in text and "a click in Teams cannot prove" in text and "Open approval page" in text
    assert page_links(refused["value"]) == [f"{storm.bot.url}{path}"]
    assert storm.patches() == []
    after = await storm.bulk()
    assert after.state is RequestState.PENDING and len(after.approval.approvals) == 1
    [event] = [e for e in await storm.audit() if e.kind == "bulk.refused"]
    assert event.payload["step_up_context"] == "c1"
    assert event.payload["authentication"] == {"method": "teams-click"}
    assert [e.kind for e in await storm.audit()].count("bulk.approved") == 0


@pytest.mark.asyncio
async def test_a_bulk_approval_on_the_page_with_a_fresh_mfa_counts(page_storm: Callable[..., Any]) -> None:
    storm, path = await _requested(page_storm)
    bulk = await storm.bulk()
    megan = storm.browser()

    shown = await megan.sign_in(f"/approve/signin?bulk={bulk.id}&step_up=1", MEGAN_UPN)

    assert shown.status_code == 200, shown.text
    assert str(shown.url).endswith(path)
    page = htmllib.unescape(shown.text)
    assert "Disable account: 25 identities" in page
    assert "Left out: protected (1)" in page and "Break Glass" in page
    assert bulk.target_hash in page
    assert "Sign in again with MFA" not in page
    decided = await megan.post_form(path, form_fields(shown.text, "approve"))
    await storm.bot.service.drain()

    assert decided.status_code == 200, decided.text
    assert str(decided.url).endswith("?done=approve")
    assert "Your approval is recorded." in decided.text
    assert len(storm.patches()) == SPRAYED
    assert all(storm.tenant.user(_user(i)["id"])["accountEnabled"] is False for i in range(SPRAYED))
    assert "25 done · 0 failed" in card_text(storm.campaign_card())
    [approved] = [e for e in await storm.audit() if e.kind == "bulk.approved"]
    assert approved.actor_id == MEGAN["id"]
    assert approved.payload["authentication"]["method"] == "sign-in"
    assert approved.payload["authentication"]["acrs"] == ["c1"]
    assert approved.payload["target_hash"] == bulk.target_hash
    [requested] = [e for e in await storm.audit() if e.kind == "bulk.requested"]
    assert requested.payload["authentication"] == {"method": "teams-click"}
    # No more decisions to make: the page and the card say so, and carry no link.
    assert page_links(storm.campaign_card()) == []
    again = await megan.open(path)
    assert 'value="approve"' not in again.text and "25 done" in again.text


@pytest.mark.asyncio
async def test_a_bulk_approval_without_mfa_is_refused_on_the_page(
    page_storm: Callable[..., Any], clock: Clock
) -> None:
    storm, path = await _requested(page_storm)
    megan = storm.browser()

    weak = await megan.sign_in(path, MEGAN_UPN, mfa=False)
    assert "Sign in again with MFA" in weak.text
    no_mfa = await megan.post_form(path, form_fields(weak.text, "approve"))

    assert no_mfa.status_code == 403
    assert "does not provide it" in htmllib.unescape(no_mfa.text)
    assert storm.patches() == []
    assert (await storm.bulk()).state is RequestState.PENDING
    refusals = [e for e in await storm.audit() if e.kind == "bulk.refused"]
    assert [e.payload["authentication"]["method"] for e in refusals] == ["sign-in"]
    assert refusals[0].payload["step_up_context"] == "c1"


@pytest.mark.asyncio
async def test_hostile_bulk_forms_get_a_precise_4xx_and_write_nothing(page_storm: Callable[..., Any]) -> None:
    storm, path = await _requested(page_storm)
    bulk = await storm.bulk()
    megan = storm.browser()
    shown = await megan.sign_in(f"/approve/signin?bulk={bulk.id}&step_up=1", MEGAN_UPN)
    good = form_fields(shown.text, "approve")
    assert good["request"] == bulk.target_hash
    before = len(await storm.audit())
    url = f"{storm.bot.url}{path}"

    answers = {
        "no csrf": await megan.post_form(path, {k: v for k, v in good.items() if k != "csrf"}),
        "wrong csrf": await megan.post_form(path, {**good, "csrf": "0" * 64}),
        "other site": await megan.post_form(path, good, Origin="https://evil.example"),
        "unknown verb": await megan.post_form(path, {**good, "verb": "bulkApprove"}),
        "case verb": await megan.post_form(path, {**good, "verb": "disableAccount"}),
        "no hash": await megan.post_form(path, {k: v for k, v in good.items() if k != "request"}),
        "other hash": await megan.post_form(path, {**good, "request": "0" * 64}),
        "bad hash": await megan.post_form(path, {**good, "request": bulk.target_hash.upper()}),
        "extra field": await megan.post_form(path, {**good, "version": "1"}),
        "unknown field": await megan.post_form(path, {**good, "bulkId": "other"}),
        "long note": await megan.post_form(path, {**good, "reason": "x" * 501}),
        "huge": await megan.post_form(path, {**good, "reason": "x" * 20_000}),
        "nul": await megan.post_form(path, {**good, "reason": "a\x00b"}),
        "json": await megan.request("POST", url, json=good),
        "odd id": await megan.post_form("/approve/bulk/..%2F..%2Fetc", good),
        "unknown id": await megan.post_form("/approve/bulk/000000000000", good),
        "signed out": await storm.browser().post_form(path, good),
    }

    expected = {
        "no csrf": 403,
        "wrong csrf": 403,
        "other site": 403,
        "unknown verb": 400,
        "case verb": 400,
        "no hash": 400,
        "other hash": 409,
        "bad hash": 400,
        "extra field": 400,
        "unknown field": 400,
        "long note": 400,
        "huge": 413,
        "nul": 400,
        "json": 415,
        "odd id": 404,
        "unknown id": 404,
        "signed out": 401,
    }
    assert {k: a.status_code for k, a in answers.items()} == expected
    assert len(await storm.audit()) == before
    assert storm.patches() == []
    after = await storm.bulk()
    assert after.state is RequestState.PENDING and len(after.approval.approvals) == 1


@pytest.mark.asyncio
async def test_strangers_and_unknown_bulk_requests_get_the_same_404(page_storm: Callable[..., Any]) -> None:
    storm, path = await _requested(page_storm)
    visitor = storm.browser()
    first = await visitor.request("GET", f"{storm.bot.url}{path}")
    assert first.status_code == 302
    assert first.headers["Location"] == f"/approve/signin?bulk={path.rsplit('/', 1)[1]}"

    victim = storm.browser()  # a person of the tenant who is neither responder nor approver
    theirs = await victim.sign_in(path, _user(4)["userPrincipalName"])
    alex = storm.browser()
    await alex.sign_in(path, ALEX_UPN)
    missing = await alex.open("/approve/bulk/000000000000")

    assert theirs.status_code == missing.status_code == 404
    assert theirs.text == missing.text
    assert "Disable account" not in theirs.text
    # The requester sees the request and may cancel it, not approve it.
    own = await alex.open(path)
    assert own.status_code == 200
    assert 'value="cancel"' in own.text and 'value="approve"' not in own.text
