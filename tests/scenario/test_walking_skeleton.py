"""The first real path: alert in the tenant -> card in the channel -> click -> Graph -> thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.config.settings import Settings
from devtools.sandbox import SandboxTenant
from tests.conftest import OUTSIDER, RESPONDER, Clock
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, card_action, install_activity, invoke_activity

ADELE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"


def _patches(tenant: SandboxTenant) -> list[object]:
    return [r for r in tenant.requests if r.method == "PATCH"]


async def _install_and_poll(bot: BotHarness, connector: RecordingConnector) -> None:
    status, _ = await bot.post(install_activity(connector.service_url))
    assert status in (200, 201)
    await bot.service.drain()
    assert await bot.poller.poll_once() == 3
    await bot.service.drain()


async def test_alert_becomes_card_and_responder_disables_account(
    bot: BotHarness, tenant: SandboxTenant, connector: RecordingConnector
) -> None:
    await _install_and_poll(bot, connector)

    posts = connector.of_kind("create")
    assert len(posts) == 3, "one card per compromised identity"
    adele_post = next(p for p in posts if "Adele Vance" in p.text)
    assert "Suspected identity theft (pass-the-ticket)" in adele_post.text
    assert "Defender for Identity" in adele_post.text
    assert "HIGH" in adele_post.text
    card = adele_post.card
    assert card is not None and card["version"] == "1.5"
    disable = card_action(card, "disableAccount")

    # Someone who is not a responder clicks: refused in words, nothing changes anywhere.
    status, answer = await bot.post(
        invoke_activity(
            connector.service_url,
            adele_post.conversation_id,
            user_object_id=OUTSIDER["id"],
            user_name=OUTSIDER["name"],
            verb="disableAccount",
            data={**disable["data"], "reason": "I think so"},
        )
    )
    await bot.service.drain()
    assert status == 200
    assert answer["statusCode"] == 200
    assert "Eve Outsider is not an authorized responder" in str(answer["value"])
    assert _patches(tenant) == []
    assert tenant.user(ADELE)["accountEnabled"] is True
    assert connector.of_kind("update") == [] and connector.of_kind("send") == []

    # A responder clicks: Graph PATCH, read-back, card updated in place, verified reply in thread.
    status, answer = await bot.post(
        invoke_activity(
            connector.service_url,
            adele_post.conversation_id,
            user_object_id=RESPONDER["id"],
            user_name=RESPONDER["name"],
            verb="disableAccount",
            data={**disable["data"], "reason": "Pass-the-ticket from FIN-SRV-07"},
        )
    )
    await bot.service.drain()
    assert status == 200
    assert answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert tenant.user(ADELE)["accountEnabled"] is False
    patches = _patches(tenant)
    assert len(patches) == 1
    assert patches[0].json == {"accountEnabled": False}
    reads = [r for r in tenant.requests if r.method == "GET" and r.path.endswith(ADELE)]
    assert reads, "the state must be read back after the write"

    updates = connector.of_kind("update")
    assert updates and all(u.activity_id == adele_post.activity_id for u in updates)
    assert "Disabled, cloud-only (read back" in updates[-1].text
    assert "Disable account: done" in updates[-1].text
    offered = {a["verb"] for a in _execute_actions(updates[-1].card)}
    assert "disableAccount" not in offered and "enableAccount" in offered, "a contained case offers the undo"

    replies = connector.in_thread(adele_post.activity_id)
    assert len(replies) == 1
    reply = replies[0].text
    assert "Disable account succeeded" in reply
    assert "Adele Vance (adele.vance@contoso.com)" in reply
    assert "Requested by Alex Wilber" in reply
    assert "Pass-the-ticket from FIN-SRV-07" in reply
    assert "accountEnabled = false" in reply
    assert "request-id" in reply
    # The click is answered once the decision is stored (the action runs in the background); the
    # verified state reaches everyone, the clicker included, through the channel update above.
    clicked = str(answer["value"])
    assert "Disable account: approved, starting" in clicked or "Disable account: running" in clicked


async def test_a_restart_neither_reposts_nor_forgets_the_thread(
    make_settings: Callable[..., Settings], clock: Clock, tenant: SandboxTenant, connector: RecordingConnector
) -> None:
    first = BotHarness(make_settings(), clock)
    await first.start()
    await _install_and_poll(first, connector)
    await first.stop()
    assert len(connector.of_kind("create")) == 3

    tenant.add_alert(
        {
            "user": "adele.vance@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Unfamiliar sign-in properties",
            "severity": "medium",
        }
    )
    second = BotHarness(make_settings(), clock)
    await second.start()
    try:
        assert await second.poller.poll_once() >= 1
        await second.service.drain()
    finally:
        await second.stop()
    assert len(connector.of_kind("create")) == 3, "no card is posted twice"
    updates = connector.of_kind("update")
    assert len(updates) == 1
    adele_post = next(p for p in connector.of_kind("create") if "Adele Vance" in p.text)
    assert updates[0].activity_id == adele_post.activity_id
    assert "Unfamiliar sign-in properties" in updates[0].text
    assert "Entra ID Protection" in updates[0].text


async def test_cards_wait_for_the_channel_and_never_go_elsewhere(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    assert await bot.poller.poll_once() == 3
    await bot.service.drain()
    assert connector.calls == [], "no channel known yet: nothing is posted"

    status, _ = await bot.post(
        install_activity(connector.service_url, channel_id="19:some-other-team@thread.tacv2")
    )
    await bot.service.drain()
    assert status in (200, 201)
    assert connector.calls == [], "a team other than the configured one gets nothing"

    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    assert len(connector.of_kind("create")) == 3


def _execute_actions(card: dict[str, Any] | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("verb") != "refresh":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found
