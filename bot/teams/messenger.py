"""Posting, updating and replying in the incident channel, named in the product's verbs.

This is the only place that knows how Teams threads work: a new channel post is a new
conversation (``create_conversation``), its conversation id becomes
``<channel id>;messageid=<root activity id>``, and anything sent to that id lands in the thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from html import escape
from typing import Any

from botbuilder.core import CardFactory, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
    Mention,
)

from bot.domain.models import Actor, CardRef, ChannelRef

log = logging.getLogger(__name__)


class TeamsMessenger:
    """Sends cards and thread replies to Teams through the Bot Connector, outside any turn."""

    def __init__(self, adapter: CloudAdapter, app_id: str) -> None:
        self._adapter = adapter
        self._app_id = app_id

    async def post_card(self, channel: ChannelRef, card: dict[str, Any]) -> CardRef:
        """Start a new thread in ``channel`` with ``card``; return where it landed."""
        landed: dict[str, str] = {}

        async def capture(turn_context: TurnContext) -> None:
            activity = turn_context.activity
            landed["conversation_id"] = activity.conversation.id
            landed["activity_id"] = activity.id or ""

        params = ConversationParameters(
            is_group=True,
            bot=ChannelAccount(id=channel.bot_id or self._app_id, name=channel.bot_name),
            channel_data={"channel": {"id": channel.channel_id}, "tenant": {"id": channel.tenant_id}},
            tenant_id=channel.tenant_id,
            activity=_card_activity(card),
        )
        await self._adapter.create_conversation(
            self._app_id,
            capture,
            params,
            channel_id="msteams",
            service_url=channel.service_url,
        )
        conversation_id = landed["conversation_id"]
        # The root post's id is also the thread id Teams puts after ";messageid=".
        thread_root = conversation_id.partition(";messageid=")[2]
        return CardRef(conversation_id=conversation_id, activity_id=thread_root or landed["activity_id"])

    async def update_card(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> None:
        """Replace the card of an existing post for everyone in the channel."""

        async def update(turn_context: TurnContext) -> None:
            activity = _card_activity(card)
            activity.id = ref.activity_id
            activity.conversation = ConversationAccount(id=ref.conversation_id, is_group=True)
            await turn_context.update_activity(activity)

        await self._continue(channel, ref, update)

    async def reply_in_thread(
        self, channel: ChannelRef, ref: CardRef, text: str, mentions: Sequence[Actor] = ()
    ) -> str:
        """Post ``text`` (markdown) as a reply in the card's thread, @mentioning ``mentions``."""
        sent: dict[str, str] = {}
        message = MessageFactory.text(text)
        if mentions:
            tags = " ".join(f"<at>{escape(m.label)}</at>" for m in mentions)
            message.text = f"{tags} {text}"
            message.entities = [
                Mention(
                    mentioned=ChannelAccount(id=m.object_id, name=m.label),
                    text=f"<at>{escape(m.label)}</at>",
                    type="mention",
                )
                for m in mentions
            ]

        async def reply(turn_context: TurnContext) -> None:
            response = await turn_context.send_activity(message)
            sent["id"] = (response.id if response else "") or ""

        await self._continue(channel, ref, reply)
        return sent.get("id", "")

    async def _continue(self, channel: ChannelRef, ref: CardRef, logic: Any) -> None:
        reference = ConversationReference(
            channel_id="msteams",
            service_url=channel.service_url,
            conversation=ConversationAccount(
                id=_thread_conversation_id(ref), is_group=True, tenant_id=channel.tenant_id
            ),
            bot=ChannelAccount(id=channel.bot_id or self._app_id, name=channel.bot_name),
        )
        await self._adapter.continue_conversation(reference, logic, self._app_id)


def _thread_conversation_id(ref: CardRef) -> str:
    if ";messageid=" in ref.conversation_id:
        return ref.conversation_id
    return f"{ref.conversation_id};messageid={ref.activity_id}"


def _card_activity(card: dict[str, Any]) -> Activity:
    activity: Activity = MessageFactory.attachment(CardFactory.adaptive_card(card))
    return activity
