"""Untrusted text and sizes through the real app: hostile names, titles, URLs, reasons and chat
arguments stay data in every card, thread reply, alert comment and chat answer; over-long
reasons are refused on the server; every message the bot sends fits Teams' 28 KB."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from bot.domain.models import RequestState
from bot.web.app import STORE
from cards.text import MAX_MESSAGE_BYTES
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, SCENARIO, SECOND_RESPONDER, Clock, write_policy
from tests.scenario.test_approvals import Channel, card_text
from tests.scenario.test_intake import SECRET, push
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import BOT_ID, TENANT_ID, BotHarness
from tests.support.inertcheck import card_problems, message_problems, plain_problems

MALLORY_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a77"
MALLORY_UPN = "mallory@contoso.com"
MALLORY_CARD = "Open the portal"  # in the title of Mallory's alert: finds her card
HUGE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a78"
HUGE_UPN = "huge@contoso.com"
HUGE_NAME = ("😀 Mallory & [Sons] <at>x</at> " * 4_000)[:100_000]
HOSTILE_NAME = (
    "Mallory [reset your password](https://evil.io/reset) <at>Megan Bowen</at> "
    "\u202egnp.exe www.evil.com # Heading"
)
HOSTILE_TITLE = (
    "[Open the portal](https://evil.io/login) <b>urgent</b> `x` **now** security.microsoft.com.evil.io"
)
EVIL_URL = "https://security.microsoft.com.evil.io/alerts/1)](https://evil.io"
HOSTILE_REASON = (
    "[click](https://evil.io) <at>Megan Bowen</at>\n# heading\n- list \u2066isolated\u2069 evil.io"
)
HOSTILE_CLICKER = "Alex <at>Megan Bowen</at> [x](javascript:alert(1)) \u202e"
_ids = itertools.count(1)


@pytest.fixture
async def tenant(tmp_path: Path, clock: Clock) -> AsyncIterator[SandboxTenant]:
    """The test tenant plus Mallory, whose directory name and alert are written by an attacker."""
    scenario = {
        **SCENARIO,
        "users": [
            *SCENARIO["users"],
            {"id": MALLORY_ID, "userPrincipalName": MALLORY_UPN, "displayName": HOSTILE_NAME},
            {"id": HUGE_ID, "userPrincipalName": HUGE_UPN, "displayName": HUGE_NAME},
        ],
        "alerts": [
            *SCENARIO["alerts"],
            {
                "user": MALLORY_UPN,
                "serviceSource": "microsoftDefenderForIdentity",
                "title": HOSTILE_TITLE,
                "severity": "high",
                "alertWebUrl": EVIL_URL,
                "mitreTechniques": ["T1550.003", "<at>x</at>[t](https://evil.io)"],
                "minutes_ago": 20,
            },
            {
                "user": HUGE_UPN,
                "serviceSource": "azureAdIdentityProtection",
                "title": "Huge Mallory " * 2_000,
                "severity": "medium",
                "minutes_ago": 15,
            },
        ],
    }
    sandbox = SandboxTenant(scenario, cert_dir=tmp_path / "tenant", clock=clock)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == [], "the bot broke the Graph contract"


@pytest.fixture
async def channel_with(
    make_settings: Callable[..., Settings],
    clock: Clock,
    tenant: SandboxTenant,
    connector: RecordingConnector,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[BotHarness] = []

    async def start(**policy: Any) -> Channel:
        path = write_policy(tmp_path / "untrusted-policy.yaml", **policy)
        harness = BotHarness(
            make_settings(policy_file=str(path), push_shared_secret=SECRET, card_update_coalesce_seconds=0),
            clock,
        )
        await harness.start()
        started.append(harness)
        channel = Channel(harness, connector, tenant)
        await channel.open()
        return channel

    yield start
    for harness in started:
        await harness.stop()


def sent_problems(calls: list[ConnectorCall]) -> list[str]:
    """Markup the bot did not write, in everything it sent to Teams."""
    problems: list[str] = []
    for call in calls:
        activity = call.body.get("activity", call.body) if call.kind == "create" else call.body
        if call.card is not None:
            problems += [f"{call.kind} {call.activity_id}: {p}" for p in card_problems(call.card)]
        if activity.get("text"):
            problems += [f"{call.kind} {call.activity_id}: {p}" for p in message_problems(activity["text"])]
        for entity in activity.get("entities") or []:
            if entity.get("type") == "mention":
                problems.append(f"{call.kind} {call.activity_id}: mentions {entity.get('mentioned')}")
    return problems


def oversized(calls: list[ConnectorCall]) -> list[str]:
    return [f"{c.kind} {c.activity_id}: {c.size} bytes" for c in calls if c.size > MAX_MESSAGE_BYTES]


async def say(channel: Channel, text: str, person: dict[str, str] = RESPONDER) -> str:
    """Send ``text`` in a personal chat with the bot; return the bot's reply as sent."""
    conversation = f"a:personal-{person['id']}"
    before = len(channel.connector.calls)
    status, _ = await channel.bot.post(
        {
            "type": "message",
            "id": f"msg-{next(_ids)}",
            "channelId": "msteams",
            "serviceUrl": channel.connector.service_url,
            "text": text,
            "from": {"id": f"29:{person['id']}", "aadObjectId": person["id"], "name": person["name"]},
            "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
            "conversation": {"id": conversation, "conversationType": "personal", "tenantId": TENANT_ID},
            "channelData": {"tenant": {"id": TENANT_ID}},
        }
    )
    await channel.bot.service.drain()
    assert status in (200, 201)
    replies = [c for c in channel.connector.calls[before:] if c.conversation_id == conversation]
    assert len(replies) == 1
    assert replies[0].size <= MAX_MESSAGE_BYTES
    text_sent: str = replies[0].body["text"]
    return text_sent


async def test_hostile_names_titles_urls_and_reasons_stay_data_everywhere(
    channel_with: Callable[..., Any], tenant: SandboxTenant
) -> None:
    channel: Channel = await channel_with()
    card = channel.current_card(MALLORY_CARD)
    text = card_text(card)
    # Shown as written, but inert: no link, mention or button the bot did not make.
    assert "Mallory [reset your password](https[://]evil[.]io/reset) <at>Megan Bowen</at>" in text
    assert "[Open the portal](https[://]evil[.]io/login) <b>urgent</b>" in text
    assert "\u202e" not in json.dumps(card, ensure_ascii=False)
    assert "evil.io" not in json.dumps(card).replace("evil[.]io", ""), "the alert's URL was dropped"
    assert sent_problems(channel.connector.calls) == []

    hostile_alex = {"id": RESPONDER["id"], "name": HOSTILE_CLICKER}
    answer = await channel.click(MALLORY_CARD, hostile_alex, "disableAccount", reason=HOSTILE_REASON)
    assert card_problems(answer["value"]) == []
    assert tenant.user(MALLORY_ID)["accountEnabled"] is False
    result = next(t for t in channel.thread(MALLORY_CARD) if "Disable account succeeded" in t)
    assert "Alex &lt;at&gt;Megan Bowen&lt;/at&gt; &#91;x&#93;(javascript:alert(1))" in result
    assert (
        "&#91;click&#93;(https&#91;://&#93;evil&#91;.&#93;io) &lt;at&gt;Megan Bowen&lt;/at&gt; &#35; heading"
        in result
    )
    assert sent_problems(channel.connector.calls) == []
    assert oversized(channel.connector.calls) == []

    comments = [c["comment"] for a in tenant.alerts() for c in a["comments"] if "Mallory" in c["comment"]]
    assert comments, "the alert was commented on"
    for comment in comments:
        assert plain_problems(comment, "alert comment") == []
        assert "[click](https[://]evil[.]io)" in comment

    for command in (
        f"history {MALLORY_UPN}",
        "history <at>Megan Bowen</at>[x](https://evil.io)@evil.io",
        "contain [x](https://evil.io)<at>Megan</at>@evil.io",
        "[click](https://evil.io) <at>Megan Bowen</at>",
        "pending",
    ):
        reply = await say(channel, command)
        assert message_problems(reply) == [], command
    history = await say(channel, f"history {MALLORY_UPN}")
    assert "&#91;click&#93;(https&#91;://&#93;evil&#91;.&#93;io)" in history


async def test_an_over_long_reason_is_refused_and_nothing_is_stored(
    channel_with: Callable[..., Any], tenant: SandboxTenant
) -> None:
    channel: Channel = await channel_with()
    answer = await channel.click("Lee Gu", RESPONDER, "disableAccount", reason="x" * 200_000)
    assert "The reason is 200,000 characters long; the bot keeps at most 500" in card_text(answer["value"])
    case = await channel.bot.case_of("lee.gu@contoso.com")
    store = channel.bot.app[STORE]
    assert await store.list_requests(case.id) == []
    assert channel.patches() == []
    refusals = [e for e in await store.list_audit() if e.kind == "request.refused"]
    assert len(refusals) == 1 and "200,000 characters" in refusals[0].payload["reason"]
    assert "x" * 1000 not in json.dumps([e.payload for e in await store.list_audit()])
    assert len(json.dumps(answer)) <= MAX_MESSAGE_BYTES

    # The longest allowed reason runs; a rejection note gets the same limit.
    # (The click answers once its decision is stored; the action follows in the background.)
    answer = await channel.click("Lee Gu", RESPONDER, "disableAccount", reason="r" * 500)
    assert "characters long" not in card_text(answer["value"])
    await channel.bot.service.drain()
    (request,) = await store.list_requests(case.id)
    assert request.reason == "r" * 500 and request.state is RequestState.SUCCEEDED
    assert len(channel.patches()) == 1


async def test_an_over_long_rejection_note_is_refused_and_the_request_waits(
    channel_with: Callable[..., Any],
) -> None:
    channel: Channel = await channel_with(approvals={"disableAccount": 2})
    await channel.click("Adele Vance", RESPONDER, "disableAccount", reason="why")
    answer = await channel.click("Adele Vance", SECOND_RESPONDER, "reject", reason="n" * 501)
    assert "The note is 501 characters long" in card_text(answer["value"])
    assert "awaiting second approver" in card_text(channel.current_card("Adele Vance"))


async def test_every_message_fits_teams_limit_with_huge_inputs(channel_with: Callable[..., Any]) -> None:
    """A 100,000-character name (from the directory and from the clicker), 120 alerts with
    2,000-character titles and long sources, reasons and notes at the limit in costly characters.

    (tests/contract/test_sizes.py renders 1,000 alerts and more; through the app the case row
    grows with every alert, so this stays at what shows the cap.)"""
    channel: Channel = await channel_with(approvals={"disableAccount": 2})
    title = ("Pass-the-ticket 😀 & [x] <at>y</at> " * 100)[:2_000]
    # Small pushes: 15 alerts each (the push endpoint reads a body of more than ~64 KB short).
    for batch in range(8):
        alerts = [
            {
                "id": f"huge-{batch}-{i}",
                "title": title,
                "severity": "high" if i % 2 else "medium",
                "source": f"source-{batch}-{i}-{'s' * 200}",
                "url": "https://evil.io/" + "p" * 500,
                "user": {"objectId": HUGE_ID, "userPrincipalName": HUGE_UPN, "displayName": HOSTILE_NAME},
            }
            for i in range(15)
        ]
        status, _ = await push(channel.bot, alerts)
        assert status == 202
    await channel.bot.service.drain()

    name = "Huge Mallory"  # in the title of the huge user's first alert
    card = channel.current_card(name)
    assert "Why: 121 alerts" in card_text(card) and "… and 116 more in Defender" in card_text(card)
    huge_clicker = {"id": RESPONDER["id"], "name": HUGE_NAME}
    answer = await channel.click(name, huge_clicker, "disableAccount", reason="😀" * 500)
    assert "awaiting second approver" in card_text(answer["value"])
    assert len(json.dumps(answer)) <= MAX_MESSAGE_BYTES
    answer = await channel.click(
        name, {"id": SECOND_RESPONDER["id"], "name": HUGE_NAME}, "reject", reason="&" * 500
    )
    assert "rejected by" in card_text(answer["value"])
    assert len(json.dumps(answer)) <= MAX_MESSAGE_BYTES
    await say(channel, "pending")
    await say(channel, f"history {HUGE_UPN}")

    assert oversized(channel.connector.calls) == []
    assert max(c.size for c in channel.connector.calls) > 5_000, "the inputs were huge"
