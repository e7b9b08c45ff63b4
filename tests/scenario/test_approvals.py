"""The approval workflow through the real app: who may act, two-person sign-off, expiry,
protected accounts, tampering, stale cards and racing clicks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from devtools.sandbox import SandboxTenant
from tests.conftest import (
    OUTSIDER,
    REQUESTER_ONLY,
    RESPONDER,
    SECOND_RESPONDER,
    Clock,
    write_policy,
)
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import BotHarness, card_action, install_activity, invoke_activity

ADELE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"
LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
ALEX, MEGAN = RESPONDER, SECOND_RESPONDER


class Channel:
    """The incident channel as the tests see it: posts, clicks, what changed."""

    def __init__(self, bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant) -> None:
        self.bot = bot
        self.connector = connector
        self.tenant = tenant

    async def open(self) -> None:
        await self.bot.post(install_activity(self.connector.service_url))
        await self.bot.service.drain()
        await self.bot.poller.poll_once()
        await self.bot.service.drain()

    def post(self, name: str) -> ConnectorCall:
        return next(p for p in self.connector.of_kind("create") if name in p.text)

    def current_card(self, name: str) -> dict[str, Any]:
        post = self.post(name)
        updates = [u for u in self.connector.of_kind("update") if u.activity_id == post.activity_id]
        card = (updates[-1] if updates else post).card
        assert card is not None
        return card

    def thread(self, name: str) -> list[str]:
        return [c.text for c in self.connector.in_thread(self.post(name).activity_id)]

    async def click(
        self,
        name: str,
        person: dict[str, str],
        verb: str,
        *,
        data: dict[str, Any] | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """Click ``verb`` on the card as it currently is, as ``person``; return the invoke answer."""
        if data is None:
            data = dict(card_action(self.current_card(name), verb)["data"])
        if reason:
            data["reason"] = reason
        status, answer = await self.bot.post(
            invoke_activity(
                self.connector.service_url,
                self.post(name).conversation_id,
                user_object_id=person["id"],
                user_name=person["name"],
                verb=verb,
                data=data,
            )
        )
        await self.bot.service.drain()
        assert status == 200
        assert isinstance(answer, dict)
        return answer

    def patches(self, user_id: str | None = None) -> list[Any]:
        return [
            r for r in self.tenant.requests if r.method == "PATCH" and (user_id is None or user_id in r.path)
        ]


def card_text(card: dict[str, Any]) -> str:
    return ConnectorCall("send", "", "", {"attachments": [{"content": card}]}).text


def verbs(card: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("verb") != "refresh":
                found.add(node["verb"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card.get("body", []))
    walk(card.get("actions", []))
    return found


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return tmp_path / "approval-policy.yaml"


@pytest.fixture
async def channel_factory(
    make_settings: Callable[..., Settings],
    clock: Clock,
    tenant: SandboxTenant,
    connector: RecordingConnector,
    policy_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[BotHarness] = []

    async def start(**policy: Any) -> Channel:
        write_policy(policy_path, **policy)
        harness = BotHarness(make_settings(policy_file=str(policy_path)), clock)
        await harness.start()
        started.append(harness)
        channel = Channel(harness, connector, tenant)
        await channel.open()
        return channel

    yield start
    for harness in started:
        await harness.stop()


TWO_PERSON = {"approvals": {"disableAccount": 2}}


async def test_two_person_happy_path(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    answer = await channel.click(
        "Adele Vance", ALEX, "disableAccount", reason="Pass-the-ticket from FIN-SRV-07"
    )
    assert "Disable account: awaiting second approver" in card_text(answer["value"])
    shared = channel.current_card("Adele Vance")
    text = card_text(shared)
    assert "Disable account: awaiting second approver" in text
    assert "Requested by Alex Wilber" in text and "Pass-the-ticket from FIN-SRV-07" in text
    assert "an approver other than Alex Wilber" in text and "Expires" in text
    assert verbs(shared) == {"approve", "reject", "cancel"}
    assert channel.patches() == []
    assert any("awaiting second approver" in t for t in channel.thread("Adele Vance"))

    answer = await channel.click("Adele Vance", MEGAN, "approve")
    assert len(channel.patches(ADELE)) == 1
    assert channel.tenant.user(ADELE)["accountEnabled"] is False
    final = card_text(channel.current_card("Adele Vance"))
    assert "Disable account: done" in final and "2 of 2: Alex Wilber, Megan Bowen" in final
    results = [t for t in channel.thread("Adele Vance") if "Disable account succeeded" in t]
    assert len(results) == 1
    assert "Signed off by: Alex Wilber, Megan Bowen" in results[0]


async def test_self_approval_is_refused(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    answer = await channel.click("Adele Vance", ALEX, "approve")
    assert "a different approver must approve it" in card_text(answer["value"])
    assert channel.patches() == []
    assert "awaiting second approver" in card_text(channel.current_card("Adele Vance"))


async def test_requester_only_needs_one_approver(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory()
    answer = await channel.click("Lee Gu", REQUESTER_ONLY, "disableAccount", reason="leaked credentials")
    assert "Disable account: awaiting approval" in card_text(answer["value"])
    assert channel.patches() == []
    await channel.click("Lee Gu", MEGAN, "approve")
    assert len(channel.patches(LEE)) == 1


async def test_outsiders_cannot_approve(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    answer = await channel.click("Adele Vance", OUTSIDER, "approve")
    assert "Eve Outsider is not an approver" in card_text(answer["value"])
    answer = await channel.click("Adele Vance", REQUESTER_ONLY, "approve")
    assert "Rita Requester is not an approver" in card_text(answer["value"])
    assert channel.patches() == []


async def test_an_approver_removed_from_the_policy_no_longer_counts(
    channel_factory: Callable[..., Any],
    make_settings: Callable[..., Settings],
    clock: Clock,
    policy_path: Path,
) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    await channel.bot.stop()
    # The admin takes Megan out of the approvers and restarts the bot.
    write_policy(policy_path, approvers={"users": [ALEX["id"]]}, **TWO_PERSON)
    channel.bot = BotHarness(make_settings(policy_file=str(policy_path)), clock)
    await channel.bot.start()
    try:
        answer = await channel.click("Adele Vance", MEGAN, "approve")
    finally:
        await channel.bot.stop()
    assert "Megan Bowen is not an approver" in card_text(answer["value"])
    assert channel.patches() == []


async def test_expiry_updates_the_card(channel_factory: Callable[..., Any], clock: Clock) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    late_approval = dict(card_action(channel.current_card("Adele Vance"), "approve")["data"])
    clock.now += timedelta(minutes=11)
    await channel.bot.service.sweep()
    reminders = [t for t in channel.thread("Adele Vance") if "Reminder" in t]
    assert len(reminders) == 1, "approvers are reminded once after 10 minutes"
    reminder = channel.connector.in_thread(channel.post("Adele Vance").activity_id)[-1].body
    assert "<at>Megan Bowen</at>" in reminder["text"], "the other approver is mentioned"
    assert [e["mentioned"]["id"] for e in reminder["entities"]] == [MEGAN["id"]]
    clock.now += timedelta(minutes=20)
    await channel.bot.service.sweep()
    await channel.bot.service.drain()
    card = channel.current_card("Adele Vance")
    assert "Disable account: expired without a decision" in card_text(card)
    assert "disableAccount" in verbs(card), "a new request can be made"
    assert not verbs(card) & {"approve", "reject", "cancel"}
    assert any("expired" in t for t in channel.thread("Adele Vance"))
    # A late approval from a card that still showed the buttons changes nothing.
    answer = await channel.click("Adele Vance", MEGAN, "approve", data=late_approval)
    assert "nothing was done" in card_text(answer["value"])
    assert channel.patches() == []


async def test_reject(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    await channel.click("Adele Vance", MEGAN, "reject", reason="False positive: travel")
    text = card_text(channel.current_card("Adele Vance"))
    assert "Disable account: rejected by Megan Bowen" in text and "False positive: travel" in text
    assert any("rejected by Megan Bowen" in t for t in channel.thread("Adele Vance"))
    assert channel.patches() == []


async def test_cancel_only_by_the_requester(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    answer = await channel.click("Adele Vance", MEGAN, "cancel")
    assert "Only Alex Wilber, who asked for this action, can cancel it" in card_text(answer["value"])
    await channel.click("Adele Vance", ALEX, "cancel")
    assert "Disable account: cancelled by Alex Wilber" in card_text(channel.current_card("Adele Vance"))
    assert channel.patches() == []


async def test_protected_account_is_never_touched(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory()
    card = channel.current_card("Break Glass")
    assert "Protected account: the bot never acts on it" in card_text(card)
    assert "disableAccount" not in verbs(card)
    # A forged click (the button is not even on the card) is refused all the same.
    case = await channel.bot.case_of("breakglass@contoso.com")
    answer = await channel.click(
        "Break Glass",
        ALEX,
        "disableAccount",
        data={"caseId": case.id, "cardVersion": case.revision},
        reason="x",
    )
    assert "is a protected account" in card_text(answer["value"])
    assert channel.patches() == []


async def test_blast_radius_limit(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(blast_radius_per_hour=1)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="first")
    answer = await channel.click("Lee Gu", ALEX, "disableAccount", reason="second")
    assert "blast-radius limit is reached" in card_text(answer["value"])
    assert len(channel.patches()) == 1


async def test_tampered_card_data_cannot_choose_target_or_action(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory()
    data = dict(card_action(channel.current_card("Adele Vance"), "disableAccount")["data"])
    data.update(
        {"userId": LEE, "upn": "lee.gu@contoso.com", "action": "deleteUser", "approvals": [MEGAN["id"]]}
    )
    await channel.click("Adele Vance", ALEX, "disableAccount", data=data, reason="why")
    assert [r.path for r in channel.patches()] == [f"/v1.0/users/{ADELE}"]
    lee = await channel.bot.case_of("lee.gu@contoso.com")
    answer = await channel.click(
        "Lee Gu", ALEX, "deleteUser", data=dict(data, caseId=lee.id, cardVersion=lee.revision)
    )
    assert "Unknown action" in card_text(answer["value"])
    assert len(channel.patches()) == 1


async def test_stale_card_gets_the_current_state(
    channel_factory: Callable[..., Any], tenant: SandboxTenant
) -> None:
    channel: Channel = await channel_factory()
    old = dict(card_action(channel.current_card("Adele Vance"), "disableAccount")["data"])
    tenant.add_alert(
        {
            "user": "adele.vance@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Atypical travel",
            "severity": "medium",
        }
    )
    await channel.bot.poller.poll_once()
    await channel.bot.service.drain()
    answer = await channel.click("Adele Vance", ALEX, "disableAccount", data=old, reason="why")
    text = card_text(answer["value"])
    assert "This card was out of date, so nothing was done" in text and "Atypical travel" in text
    assert channel.patches() == []


async def test_duplicate_invokes_run_once(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory()
    data = dict(card_action(channel.current_card("Adele Vance"), "disableAccount")["data"], reason="why")
    await asyncio.gather(
        *(channel.click("Adele Vance", ALEX, "disableAccount", data=dict(data)) for _ in range(5))
    )
    assert len(channel.patches(ADELE)) == 1
    assert len([t for t in channel.thread("Adele Vance") if "Disable account succeeded" in t]) == 1


async def test_fifty_concurrent_approvals_execute_once(channel_factory: Callable[..., Any]) -> None:
    approvers = [{"id": f"bbbbbbbb-0000-4000-8000-{i:012d}", "name": f"Approver {i}"} for i in range(50)]
    channel: Channel = await channel_factory(
        approvers={"users": [ALEX["id"]] + [a["id"] for a in approvers]}, **TWO_PERSON
    )
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    data = dict(card_action(channel.current_card("Adele Vance"), "approve")["data"])
    answers = await asyncio.gather(
        *(channel.click("Adele Vance", a, "approve", data=dict(data)) for a in approvers)
    )
    assert len(channel.patches(ADELE)) == 1
    assert len([t for t in channel.thread("Adele Vance") if "Disable account succeeded" in t]) == 1
    stale = [
        a
        for a in answers
        if "out of date" in card_text(a["value"]) or "no longer needs approval" in card_text(a["value"])
    ]
    assert len(stale) == 49


async def test_refresh_gives_each_person_their_own_buttons(channel_factory: Callable[..., Any]) -> None:
    channel: Channel = await channel_factory(**TWO_PERSON)
    await channel.click("Adele Vance", ALEX, "disableAccount", reason="why")
    shared = channel.current_card("Adele Vance")
    refresh = card_action(shared, "refresh")
    assert shared["refresh"]["userIds"] == [f"29:{ALEX['id']}"], "the requester's Teams id, at most 60"
    views = {
        who["name"]: verbs(
            (await channel.click("Adele Vance", who, "refresh", data=dict(refresh["data"])))["value"]
        )
        for who in (ALEX, MEGAN, OUTSIDER)
    }
    assert views == {
        "Alex Wilber": {"cancel"},
        "Megan Bowen": {"approve", "reject"},
        "Eve Outsider": set(),
    }
    assert channel.patches() == [], "a refresh changes nothing"
