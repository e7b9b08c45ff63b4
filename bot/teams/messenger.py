"""Posting, updating and replying in the incident channel on botbuilder, in the product's verbs.

This is where botbuilder learns how Teams threads work: a new channel post is a new conversation
(``POST /v3/conversations``), its conversation id becomes ``<channel id>;messageid=<root activity
id>``, and anything sent to that id lands in the thread. Every request goes through
:class:`bot.teams.delivery.Delivery` (ordering, pacing, the one retry policy), one HTTP request per
attempt, in a proactive turn of its own.

How botbuilder 4.17.1 surfaces failures, and why an attempt looks the way it does:

- An HTTP error answer raises ``ErrorResponseException`` (an ``msrest`` ``HttpOperationError``):
  ``.response`` is the ``requests.Response`` (``status_code``, ``headers``), ``.error.error`` the
  deserialized ``{"error": {"code", "message"}}`` body.
- No answer raises ``msrest.exceptions.ClientRequestError`` wrapping the ``requests`` exception;
  a refused or timed-out *connect* (urllib3 ``ConnectTimeoutError`` and its subclass
  ``NewConnectionError``) means the request never left.
- Inside ``continue_conversation`` the adapter hands an exception raised by the callback to
  ``on_turn_error``, which logs it and returns normally: a failed update or reply would be lost
  without a trace. So the callback catches the exception and the messenger raises it afterwards.
- msrest's own transport retries (urllib3 ``Retry``, 3 attempts with 0.8 s backoff) would send
  requests the pacer never saw: PUTs again on 408 and 5xx, on a 429 or 503 carrying
  ``Retry-After`` (only whole seconds: a fractional value makes urllib3 raise ``InvalidHeader``)
  and on a lost answer; any method again on a failed connect. (POSTs are not retried on answers:
  msrest allows them through ``method_whitelist``, which urllib3 2 no longer reads.) They are
  switched off for the connector client of each turn: :mod:`bot.teams.delivery` is the one retry
  policy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from botbuilder.core import BotAdapter, CardFactory, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
    Mention,
)
from msrest.exceptions import ClientRequestError, HttpOperationError
from urllib3.exceptions import ConnectTimeoutError
from urllib3.util.retry import Retry

from bot.domain.models import Actor, CardRef, ChannelRef
from bot.teams.delivery import (
    Call,
    Failure,
    ProactiveMessenger,
    RetryPolicy,
    in_own_turn,
    mention_text,
    thread_conversation_id,
    thread_root,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_NO_TRANSPORT_RETRIES = Retry(total=0, raise_on_status=False)

__all__ = ["RetryPolicy", "TeamsMessenger"]


class TeamsMessenger(ProactiveMessenger[CloudAdapter, TurnContext]):
    """Sends cards and thread replies to Teams through the Bot Connector, outside any turn."""

    def _failure(self, exc: Exception) -> Failure | None:
        return _failure(exc)

    async def post_card(self, channel: ChannelRef, card: dict[str, Any]) -> CardRef:
        """Start a new thread in ``channel`` with ``card``; return where it landed."""
        params = ConversationParameters(
            is_group=True,
            bot=ChannelAccount(id=channel.bot_id or self._app_id, name=channel.bot_name),
            channel_data={"channel": {"id": channel.channel_id}, "tenant": {"id": channel.tenant_id}},
            tenant_id=channel.tenant_id,
            activity=_card_activity(card),
        )

        async def create(turn_context: TurnContext) -> Any:
            # The same request CloudAdapter.create_conversation makes, but through the turn's
            # connector client, whose transport retries are off (see the module docstring).
            client = turn_context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY]
            return await client.conversations.create_conversation(params)

        # New posts land in the channel's conversation: that is their pacing key.
        call = Call("post a card", channel.channel_id, repeatable=False)
        created = await self._call(channel, call, create)
        conversation_id: str = created.id or channel.channel_id
        root = thread_root(conversation_id)
        return CardRef(conversation_id=conversation_id, activity_id=root or created.activity_id or "")

    async def update_card(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> None:
        """Replace the card of an existing post for everyone in the channel."""

        async def update(turn_context: TurnContext) -> None:
            activity = _card_activity(card)
            activity.id = ref.activity_id
            activity.conversation = ConversationAccount(id=ref.conversation_id, is_group=True)
            await turn_context.update_activity(activity)

        thread = thread_conversation_id(ref)
        await self._call(channel, Call("update the card", thread, repeatable=True), update)

    async def post_card_in_thread(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> CardRef:
        """Post ``card`` as a reply in the thread of ``ref``; return where it landed (a reply's
        own reference: updating it replaces that reply's card).

        Like a new post, a reply whose answer was lost may have landed: it is not sent again
        then (the caller gets :class:`~bot.errors.TeamsOutcomeUnknown`).
        """

        async def send(turn_context: TurnContext) -> str:
            response = await turn_context.send_activity(_card_activity(card))
            return (response.id if response else "") or ""

        thread = thread_conversation_id(ref)
        activity_id = await self._call(
            channel, Call("post a card in the thread", thread, repeatable=False), send
        )
        return CardRef(conversation_id=thread, activity_id=activity_id)

    async def reply_in_thread(
        self, channel: ChannelRef, ref: CardRef, text: str, mentions: Sequence[Actor] = ()
    ) -> str:
        """Post ``text`` (markdown) as a reply in the card's thread, @mentioning ``mentions``.

        A reply lost on its way back (timeout, 502/504) is sent again: a reply shown twice is
        better than a reply missing from the case's record in the channel.
        """
        with_mentions, mentioned = mention_text(text, mentions)
        message = MessageFactory.text(with_mentions)
        message.entities = [
            Mention(mentioned=ChannelAccount(id=m.object_id, name=m.name), text=m.text, type="mention")
            for m in mentioned
        ] or None

        async def reply(turn_context: TurnContext) -> str:
            response = await turn_context.send_activity(message)
            return (response.id if response else "") or ""

        thread = thread_conversation_id(ref)
        return await self._call(channel, Call("reply in the thread", thread, repeatable=True), reply)

    async def _once(self, channel: ChannelRef, call: Call, work: Callable[[TurnContext], Awaitable[T]]) -> T:
        """One attempt, in a proactive turn of its own (a fresh connector client each time)."""
        reference = ConversationReference(
            channel_id="msteams",
            service_url=channel.service_url,
            conversation=ConversationAccount(
                id=call.conversation_id, is_group=True, tenant_id=channel.tenant_id
            ),
            bot=ChannelAccount(id=channel.bot_id or self._app_id, name=channel.bot_name),
        )

        async def once(turn_context: TurnContext) -> T:
            _switch_off_transport_retries(turn_context)
            return await work(turn_context)

        return await in_own_turn(
            lambda logic: self._adapter.continue_conversation(reference, logic, self._app_id), once, call
        )


def _failure(exc: Exception) -> Failure | None:
    """Read a botbuilder (msrest) exception: an HTTP error answer, or no answer at all."""
    if not isinstance(exc, HttpOperationError | ClientRequestError):
        return None
    if isinstance(exc, HttpOperationError):
        response = exc.response
        body = getattr(exc.error, "error", None)  # ErrorResponse -> Error(code, message)
        return Failure(
            status=int(getattr(response, "status_code", 0) or 0),
            code=str(getattr(body, "code", "") or ""),
            detail=str(getattr(body, "message", "") or exc.message),
            retry_after=(getattr(response, "headers", None) or {}).get("Retry-After"),
            maybe_sent=True,
        )
    causes = list(_causes(exc))
    return Failure(
        status=0,
        code="",
        detail=f"{type(causes[-1]).__name__}: {causes[-1]}",
        retry_after=None,
        # A connect that failed or timed out (refused, unknown host) sent nothing.
        maybe_sent=not any(isinstance(cause, ConnectTimeoutError) for cause in causes),
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: msrest's ``inner_exception``, requests' first argument,
    urllib3's ``reason`` and ``__cause__`` (not ``__context__``, which can be unrelated)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        links = (
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            current.__cause__,
            *current.args,
        )
        current = next((link for link in links if isinstance(link, BaseException)), None)


def _switch_off_transport_retries(turn_context: TurnContext) -> None:
    """Make the turn's connector client send each request once (see the module docstring).

    msrest applies its retry policy to a requests session when the client is built; its
    ``session_configuration_callback`` runs before every request and may reconfigure it.
    """
    client = turn_context.turn_state.get(BotAdapter.BOT_CONNECTOR_CLIENT_KEY)
    config = getattr(client, "config", None)
    if config is not None:
        config.session_configuration_callback = _without_transport_retries


def _without_transport_retries(session: Any, global_config: Any, local_config: Any, **kwargs: Any) -> Any:
    for transport in session.adapters.values():
        transport.max_retries = _NO_TRANSPORT_RETRIES
    return kwargs


def _card_activity(card: dict[str, Any]) -> Activity:
    activity: Activity = MessageFactory.attachment(CardFactory.adaptive_card(card))
    return activity
