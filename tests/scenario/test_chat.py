"""Chat commands through the real app: help, pending, history, contain."""

from __future__ import annotations

import itertools
from typing import Any

from devtools.sandbox import SandboxTenant
from tests.conftest import OUTSIDER, RESPONDER
from tests.support.connector import RecordingConnector
from tests.support.harness import (
    BOT_ID,
    TENANT_ID,
    BotHarness,
    card_action,
    install_activity,
    invoke_activity,
)

_ids = itertools.count(1)


async def say(
    bot: BotHarness, connector: RecordingConnector, text: str, person: dict[str, str] = RESPONDER
) -> str:
    """Send ``text`` in a personal chat with the bot; return the bot's reply."""
    conversation = f"a:personal-{person['id']}"
    before = len(connector.calls)
    activity: dict[str, Any] = {
        "type": "message",
        "id": f"msg-{next(_ids)}",
        "channelId": "msteams",
        "serviceUrl": connector.service_url,
        "text": text,
        "from": {"id": f"29:{person['id']}", "aadObjectId": person["id"], "name": person["name"]},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {"id": conversation, "conversationType": "personal", "tenantId": TENANT_ID},
        "channelData": {"tenant": {"id": TENANT_ID}},
    }
    status, _ = await bot.post(activity)
    await bot.service.drain()
    assert status in (200, 201)
    replies = [c for c in connector.calls[before:] if c.kind == "send" and c.conversation_id == conversation]
    assert len(replies) == 1
    text = replies[0].text
    assert "\\n" not in text, "line breaks are real, not escaped"
    return text


async def _open_channel(bot: BotHarness, connector: RecordingConnector) -> None:
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    await bot.poller.poll_once()
    await bot.service.drain()


async def test_help_and_unknown_commands(bot: BotHarness, connector: RecordingConnector) -> None:
    assert "`contain <upn>`" in await say(bot, connector, "help")
    assert "I don't know the command “dance”" in await say(bot, connector, "dance")


async def test_pending_and_history(bot: BotHarness, connector: RecordingConnector) -> None:
    await _open_channel(bot, connector)
    assert await say(bot, connector, "pending") == "No requests are waiting for a decision."
    post = next(p for p in connector.of_kind("create") if "Lee Gu" in p.text)
    data = dict(card_action(post.card or {}, "disableAccount")["data"], reason="leaked creds")
    # Rita may ask but not approve, so her request waits.
    rita = {"id": "aaaaaaaa-0000-4000-8000-000000000003", "name": "Rita Requester"}
    await bot.post(
        invoke_activity(
            connector.service_url,
            post.conversation_id,
            user_object_id=rita["id"],
            user_name=rita["name"],
            verb="disableAccount",
            data=data,
        )
    )
    await bot.service.drain()
    pending = await say(bot, connector, "pending")
    assert "1 request(s) waiting" in pending and "Lee Gu" in pending and "Rita Requester" in pending
    assert "open the card" in pending
    history = await say(bot, connector, "history lee.gu@contoso.com")
    assert "case.opened" in history and "request.opened by Rita Requester: leaked creds" in history
    assert "Only responders and approvers" in await say(bot, connector, "pending", OUTSIDER)


async def test_contain_opens_a_case_by_hand(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    reply = await say(bot, connector, "contain alex.wilber@contoso.com")
    assert (
        reply
        == "Opened a case for Alex Wilber (alex.wilber@contoso.com): its card is in the incident channel."
    )
    post = next(p for p in connector.of_kind("create") if "Alex Wilber" in p.text)
    assert "Opened from chat by Alex Wilber" in post.text and "disableAccount" in str(post.card)
    again = await say(bot, connector, "contain alex.wilber@contoso.com")
    assert "already has an open case" in again
    assert len([p for p in connector.of_kind("create") if "Alex Wilber" in p.text]) == 1
    assert "no user nobody@contoso.com" in await say(bot, connector, "contain nobody@contoso.com")
    assert "not an authorized responder" in await say(bot, connector, "contain lee.gu@contoso.com", OUTSIDER)
