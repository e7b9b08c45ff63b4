"""Posting, updating and replying in the incident channel on the Microsoft 365 Agents SDK.

The same verbs and threads as :mod:`bot.teams.messenger` (botbuilder), and the same ordering,
pacing and retries (:class:`bot.teams.delivery.Delivery`); only the SDK differs:

- each attempt runs in a proactive turn of its own (``continue_conversation``), whose connector
  client is the SDK's aiohttp one: an HTTP error answer raises ``aiohttp.ClientResponseError``
  (``status``, ``headers``; ``message`` carries the body of a failed reply or update, and only the
  reason phrase for a new post), no answer raises another ``aiohttp.ClientError`` or a timeout; a
  connect that failed (``ClientConnectorError``, ``ConnectionTimeoutError``) sent nothing;
- the SDK's connector sends each request once: it has no transport retries to switch off;
- an exception raised inside the turn goes to ``on_turn_error`` and is not raised again, so, as
  on botbuilder, the callback keeps it and the messenger raises it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    EntityTypes,
    Mention,
)
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import CardFactory, MessageFactory, TurnContext
from microsoft_agents.hosting.core.connector import ConnectorClientBase

from bot.domain.models import Actor, CardRef, ChannelRef
from bot.errors import TeamsError
from bot.teams.delivery import (
    Call,
    Failure,
    ProactiveMessenger,
    in_own_turn,
    mention_text,
    thread_conversation_id,
    thread_root,
)

T = TypeVar("T")


class AgentsMessenger(ProactiveMessenger[CloudAdapter, TurnContext]):
    """Sends cards and thread replies to Teams through the Bot Connector, outside any turn."""

    def _failure(self, exc: Exception) -> Failure | None:
        return _failure(exc)

    async def post_card(self, channel: ChannelRef, card: dict[str, Any]) -> CardRef:
        """Start a new thread in ``channel`` with ``card``; return where it landed."""
        params = ConversationParameters.model_validate(
            _present(
                isGroup=True,
                bot=_account(channel.bot_id or self._app_id, channel.bot_name),
                channelData={"channel": {"id": channel.channel_id}, "tenant": {"id": channel.tenant_id}},
                tenantId=channel.tenant_id,
                activity=_card_activity(card),
            )
        )

        async def create(turn_context: TurnContext) -> Any:
            return await _connector(turn_context).conversations.create_conversation(params)

        # New posts land in the channel's conversation: that is their pacing key.
        call = Call("post a card", channel.channel_id, repeatable=False)
        created = await self._call(channel, call, create)
        conversation_id: str = created.id or channel.channel_id
        root = thread_root(conversation_id)
        return CardRef(conversation_id=conversation_id, activity_id=root or created.activity_id or "")

    async def update_card(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> None:
        """Replace the card of an existing post for everyone in the channel."""

        async def update(turn_context: TurnContext) -> None:
            activity = _outgoing(turn_context, _card_activity(card))
            activity.id = ref.activity_id
            activity.conversation = ConversationAccount(id=ref.conversation_id, is_group=True)
            await _connector(turn_context).conversations.update_activity(
                ref.conversation_id, ref.activity_id, activity
            )

        thread = thread_conversation_id(ref)
        await self._call(channel, Call("update the card", thread, repeatable=True), update)

    async def post_card_in_thread(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> CardRef:
        """Post ``card`` as a reply in the thread of ``ref``; return where it landed."""
        thread = thread_conversation_id(ref)
        call = Call("post a card in the thread", thread, repeatable=False)
        activity_id = await self._call(channel, call, _sender(_card_activity(card)))
        return CardRef(conversation_id=thread, activity_id=activity_id)

    async def reply_in_thread(
        self, channel: ChannelRef, ref: CardRef, text: str, mentions: Sequence[Actor] = ()
    ) -> str:
        """Post ``text`` (markdown) as a reply in the card's thread, @mentioning ``mentions``."""
        with_mentions, mentioned = mention_text(text, mentions)
        message = MessageFactory.text(with_mentions)
        if mentioned:
            message.entities = [
                Mention(
                    mentioned=ChannelAccount(id=m.object_id, name=m.name),
                    text=m.text,
                    type=EntityTypes.MENTION,
                )
                for m in mentioned
            ]
        thread = thread_conversation_id(ref)
        return await self._call(
            channel, Call("reply in the thread", thread, repeatable=True), _sender(message)
        )

    async def _once(self, channel: ChannelRef, call: Call, work: Callable[[TurnContext], Awaitable[T]]) -> T:
        """One attempt, in a proactive turn of its own (a fresh connector client each time)."""
        continuation = Activity.model_validate(
            _present(
                type=ActivityTypes.event,
                name="ContinueConversation",
                channelId="msteams",
                serviceUrl=channel.service_url,
                conversation=_present(id=call.conversation_id, isGroup=True, tenantId=channel.tenant_id),
            )
        )
        bot_id = channel.bot_id or self._app_id
        # The turn's replies come from the recipient; with no id known (authentication off, a
        # channel registered without one) it is sent as botbuilder sends it, ``{"id": ""}``,
        # which the SDK's model refuses to validate but the Bot Connector accepts.
        continuation.recipient = (
            ChannelAccount.model_validate(_account(bot_id, channel.bot_name))
            if bot_id
            else ChannelAccount.model_construct(id="", name=channel.bot_name)
        )
        return await in_own_turn(
            lambda logic: self._adapter.continue_conversation(self._app_id, continuation, logic), work, call
        )


def _connector(turn_context: TurnContext) -> ConnectorClientBase:
    # The SDK keys its services by their abstract base class, as here.
    client = turn_context.services.get(ConnectorClientBase)  # type: ignore[type-abstract]  # the SDK keys its turn services by this abstract class
    if client is None:
        raise TeamsError("The Agents SDK turn has no Bot Connector client; nothing was sent.")
    return client


def _sender(activity: Activity) -> Callable[[TurnContext], Awaitable[str]]:
    async def send(turn_context: TurnContext) -> str:
        outgoing = _outgoing(turn_context, activity)
        conversation_id = turn_context.activity.conversation.id
        response = await _connector(turn_context).conversations.send_to_conversation(
            conversation_id, outgoing
        )
        return (response.id if response else "") or ""

    return send


def _outgoing(turn_context: TurnContext, activity: Activity) -> Activity:
    """``activity`` addressed from the bot into the turn's conversation, with no null members.

    The SDK's ``TurnContext.send_activity`` sets ``id``, ``recipient`` and ``locale`` to ``None``
    and its connector then posts them as JSON nulls (it leaves out fields never set, not those set
    to ``None``); the Agents Playground refuses such a reply with 400 "Invalid input". Built here
    as botbuilder builds it: the fields that have a value, from the bot, in the conversation.
    """
    incoming = turn_context.activity

    def dump(model: Any) -> Any:
        return model.model_dump(by_alias=True, exclude_none=True, mode="json") if model is not None else None

    body = dump(activity)
    body.update(
        _present(
            channelId="msteams", serviceUrl=incoming.service_url, conversation=dump(incoming.conversation)
        )
    )
    outgoing = Activity.model_validate(body)
    if incoming.recipient is not None:
        # Set after validation: an empty id (no app id, see _once) is sent as botbuilder sends it.
        outgoing.from_property = incoming.recipient
    return outgoing


def _failure(exc: Exception) -> Failure | None:
    """Read an aiohttp exception from the SDK's connector: an HTTP error answer, or none."""
    if isinstance(exc, aiohttp.ClientResponseError):
        code, detail = _error_body(exc.message)
        return Failure(
            status=exc.status,
            code=code,
            detail=detail,
            retry_after=exc.headers.get("Retry-After") if isinstance(exc.headers, Mapping) else None,
            maybe_sent=True,
        )
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
        return Failure(
            status=0,
            code="",
            detail=f"{type(exc).__name__}: {exc}{_cause(exc)}",
            retry_after=None,
            # A connect that failed or timed out (refused, unknown host) sent nothing.
            maybe_sent=not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError),
        )
    return None


def _cause(exc: Exception) -> str:
    """The operating system's words for a failed connect ("Connection refused"), which aiohttp's
    message leaves out (asyncio says "Connect call failed")."""
    os_error = getattr(exc, "os_error", None)
    number = getattr(os_error, "errno", None)
    return f" ({os.strerror(number)})" if isinstance(number, int) else ""


def _error_body(text: str) -> tuple[str, str]:
    """``{"error": {"code", "message"}}`` from a failed answer's body, or the text as it is."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return "", text
    if not isinstance(error, dict):
        return "", text
    return str(error.get("code") or ""), str(error.get("message") or text)


def _account(account_id: str, name: str | None) -> dict[str, Any] | None:
    """A channel account's JSON, or none without an id (the SDK's model refuses an empty one;
    botbuilder sent ``{"id": ""}``, which the Bot Connector reads as no account)."""
    return _present(id=account_id, name=name) if account_id else None


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that have a value: the SDK's models refuse ``None`` where botbuilder's left
    the field out."""
    return {key: value for key, value in fields.items() if value is not None}


def _card_activity(card: dict[str, Any]) -> Activity:
    activity: Activity = MessageFactory.attachment(CardFactory.adaptive_card(card))
    return activity
