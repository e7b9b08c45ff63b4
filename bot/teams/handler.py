"""The activity handler: turns Teams activities into service calls and answers in Teams' terms."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from botbuilder.core import ActivityHandler, InvokeResponse, MessageFactory, TurnContext
from botbuilder.schema import Activity, AdaptiveCardInvokeResponse, ConversationAccount

from bot.commands import ChatCommands
from bot.domain.models import Actor, ChannelRef
from bot.errors import RemediationError
from bot.services import CardAnswer, RemediationService
from cards.text import plain

log = logging.getLogger(__name__)

CARD_ACTION_INVOKE = "adaptiveCard/action"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ERROR_CONTENT_TYPE = "application/vnd.microsoft.error"
ERROR_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Refusal:
    """Why an activity was refused before the bot looked at it; the adapter answers 403."""

    reason: str


class TeamsBot(ActivityHandler):
    """Routes activities to :class:`RemediationService`, from the configured tenant only."""

    def __init__(self, service: RemediationService, tenant_id: str) -> None:
        self._service = service
        self._commands = ChatCommands(service)
        self._tenant_id = tenant_id.strip().lower()

    async def on_turn(self, turn_context: TurnContext) -> None:
        """Refuse another tenant's activity; dispatch; then refresh the channel reference.

        The tenant is checked first, before anything reads the activity's content: a click, a
        message or an installation from another tenant (or naming none) runs nothing, is logged
        once and audited, and the adapter answers it 403 without sending anything back. The
        channel reference is refreshed only from an activity the bot accepted: a refused click
        changes nothing at all.
        """
        activity = turn_context.activity
        reason = self._tenant_problem(activity)
        if reason is not None:
            turn_context.turn_state[REFUSAL_KEY] = Refusal(reason)
            await self._service.refuse_activity(reason, **_refusal_details(activity))
            return
        await super().on_turn(turn_context)
        if turn_context.turn_state.get(_DECLINED_KEY):
            return
        try:
            await self._capture_channel(activity)
        except RemediationError as exc:
            if activity.type in _INSTALLATION_TYPES:
                raise  # registering the channel is this activity's whole point: answer 503
            # A click or a message was handled; the next activity from the channel tries again.
            log.warning("the channel reference could not be refreshed from %s: %s", activity.id, exc.message)

    def _tenant_problem(self, activity: Activity) -> str | None:
        """``None`` when the activity names the configured tenant (and no other), else why not."""
        named = [
            tenant.strip().lower()
            for tenant in _tenants(activity)
            if isinstance(tenant, str) and tenant.strip()
        ]
        if not named:
            return "the activity names no tenant"
        if any(tenant != self._tenant_id for tenant in named):
            return "the activity comes from another tenant than the one this bot serves"
        return None

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        """Answer the invoke; an error answer marks the turn declined (nothing else is written)."""
        response = await self._answer_invoke(turn_context)
        body = response.body
        if response.status >= 400 or getattr(body, "type", None) == ERROR_CONTENT_TYPE:
            turn_context.turn_state[_DECLINED_KEY] = True
        return response

    async def _answer_invoke(self, turn_context: TurnContext) -> InvokeResponse:
        """Answer ``adaptiveCard/action`` ourselves (the SDK's own route crashes on 4.17.1).

        Other invokes (sign-in, messaging extensions, task modules) are not features of this
        bot: they get a 400 instead of the SDK's 501.
        """
        activity = turn_context.activity
        if activity.name != CARD_ACTION_INVOKE:
            return InvokeResponse(
                status=400,
                body={
                    "error": {
                        "code": "BadRequest",
                        "message": "This bot answers only Adaptive Card actions; nothing was done.",
                    }
                },
            )
        value = _as_dict(activity.value)
        action = _as_dict(value.get("action"))
        verb = action.get("verb")
        data = _as_dict(action.get("data"))
        sender = activity.from_property
        object_id = getattr(sender, "aad_object_id", None) if sender else None
        if action.get("type") != "Action.Execute" or not isinstance(verb, str):
            return _error(
                400, "BadRequest", "This is not a card action the bot understands; nothing was done."
            )
        if not object_id:
            return _error(401, "Unauthorized", "Teams did not say who clicked, so the bot did nothing.")
        actor = Actor(object_id=object_id, name=sender.name or "", teams_id=sender.id or "")
        try:
            answer = await self._service.handle_card_action(actor, verb, data)
        except RemediationError as exc:
            # The edge: one log line with the ids, and a sentence for the person who clicked.
            log.error(
                "card action %s by %s failed (activity %s, case %s, request %s): %s",
                verb,
                object_id,
                activity.id,
                data.get("caseId"),
                data.get("requestId"),
                exc.message,
            )
            return _error(
                503, "Unavailable", f"The bot could not complete that just now: {exc.message} Try again."
            )
        return _card_response(answer)

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        """Chat commands: ``help``, ``pending``, ``history <upn>``."""
        activity = turn_context.activity
        text = _without_bot_mention(activity)
        sender = activity.from_property
        actor = Actor(
            object_id=getattr(sender, "aad_object_id", None) or "",
            name=(sender.name or "") if sender else "",
        )
        reply = await self._commands.run(actor, text.strip())
        try:
            thread = await self._thread_of(activity)
        except RemediationError as exc:
            # Answered as botbuilder answers (to the message's own conversation) rather than not.
            log.warning("the thread of message %s could not be read: %s", activity.id, exc.message)
            thread = None
        try:
            if thread is None:
                await turn_context.send_activity(MessageFactory.text(reply))
            else:
                await _send_in_thread(turn_context, thread, MessageFactory.text(reply))
        except Exception as exc:  # aiohttp, msrest and botbuilder each raise their own types
            # The command has run; answering the activity with an error would only make the
            # channel resend it. One line, so a broken connector is visible.
            log.warning(
                "the reply to message %s could not be sent to %s: %s",
                activity.id,
                activity.service_url,
                type(exc).__name__,
            )

    async def _thread_of(self, activity: Activity) -> str | None:
        """The thread a message in a channel was asked in, when botbuilder's own answer (to the
        activity's conversation) could land elsewhere; ``None`` when it lands right.

        Teams threads are flat: a message asked under a card the bot posted inside another
        card's thread (a campaign member's card, in its campaign card's thread) belongs to that
        thread. Its root is the one the conversation id names (``;messageid=``), else the message
        it answers (``replyToId``), else the message itself; a root that is such a member card is
        replaced by its campaign card's thread. Only ids of a sane shape are used.
        """
        conversation = activity.conversation
        if conversation is None or not conversation.id or not _in_channel(activity):
            return None
        channel, _, named = conversation.id.partition(";messageid=")
        root = named or activity.reply_to_id or activity.id or ""
        if not channel or not _MESSAGE_ID.fullmatch(root):
            return None
        thread = await self._service.thread_of_card(root) or f"{channel};messageid={root}"
        return None if thread == conversation.id else thread

    async def _capture_channel(self, activity: Activity) -> None:
        """Remember the incident channel's reference (only called for the configured tenant)."""
        channel_data = _channel_data(activity)
        team = _as_dict(channel_data.get("team"))
        channel = _as_dict(channel_data.get("channel"))
        conversation_id = (activity.conversation.id if activity.conversation else "") or ""
        channel_id = channel.get("id") or team.get("id") or conversation_id.partition(";")[0]
        if not channel_id or not activity.service_url or not team:
            return
        recipient = activity.recipient
        ref = ChannelRef(
            channel_id=channel_id,
            service_url=activity.service_url,
            tenant_id=self._tenant_id,
            team_id=team.get("id"),
            bot_id=recipient.id if recipient else None,
            bot_name=recipient.name if recipient else None,
        )
        sender = activity.from_property
        actor = Actor(
            object_id=getattr(sender, "aad_object_id", None) or BOT_FRAMEWORK_ACTOR,
            name=(sender.name or "") if sender else "",
        )
        if await self._service.register_channel(ref, actor=actor):
            self._service.schedule_publish()


REFUSAL_KEY = "remediation-bot.refusal"
# A Teams message id (a number) or a Bot Connector activity id: what may name a thread root.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9:@._-]{1,128}")


def _in_channel(activity: Activity) -> bool:
    conversation = activity.conversation
    kind = (getattr(conversation, "conversation_type", None) or "").lower()
    return kind == "channel" or bool(_as_dict(_channel_data(activity).get("channel")))


async def _send_in_thread(turn_context: TurnContext, thread: str, message: Activity) -> None:
    """Answer the turn's message with ``message`` in the channel thread ``thread``."""
    incoming = turn_context.activity
    reference = TurnContext.get_conversation_reference(incoming)
    tenant = incoming.conversation.tenant_id if incoming.conversation else None
    reference.conversation = ConversationAccount(
        id=thread, is_group=True, conversation_type="channel", tenant_id=tenant
    )
    TurnContext.apply_conversation_reference(message, reference)
    await turn_context.adapter.send_activities(turn_context, [message])


_DECLINED_KEY = "remediation-bot.declined"
_INSTALLATION_TYPES = frozenset({"conversationUpdate", "installationUpdate"})
"""Where :meth:`TeamsBot.on_turn` leaves a :class:`Refusal` in the turn state for the adapter."""
BOT_FRAMEWORK_ACTOR = "bot-framework"
_MAX_DETAIL = 200


def _channel_data(activity: Activity) -> dict[str, Any]:
    return activity.channel_data if isinstance(activity.channel_data, dict) else {}


def _tenants(activity: Activity) -> list[Any]:
    """Every tenant the activity names: ``channelData.tenant.id`` and ``conversation.tenantId``."""
    named: list[Any] = []
    tenant = _as_dict(_channel_data(activity).get("tenant"))
    if tenant.get("id") is not None:
        named.append(tenant.get("id"))
    conversation = activity.conversation
    if conversation is not None:
        # botbuilder's model maps ``tenantID``; Teams sends ``tenantId``, which lands among the
        # additional properties. Either spelling counts.
        extra = getattr(conversation, "additional_properties", None) or {}
        for value in (conversation.tenant_id, extra.get("tenantId")):
            if value is not None:
                named.append(value)
    return named


def _refusal_details(activity: Activity) -> dict[str, str]:
    """What the audit event and the log line say about a refused activity (bounded, as data)."""
    sender = activity.from_property
    tenants = [str(t) for t in _tenants(activity)]

    def cut(value: Any) -> str:
        text = "" if value is None else str(value)
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"

    return {
        "activity_type": cut(activity.type),
        "activity_id": cut(activity.id),
        "tenant": cut(", ".join(tenants)),
        "object_id": cut(getattr(sender, "aad_object_id", None) if sender else None),
        "name": cut(sender.name if sender else None),
        "service_url": cut(activity.service_url),
        "conversation_id": cut(activity.conversation.id if activity.conversation else None),
    }


def _without_bot_mention(activity: Activity) -> str:
    """The message text with the @mention of the bot taken out (plain text replacement).

    botbuilder's own helper compiles the mention's text as a regular expression and crashes on
    mentions without a name; this only removes the exact ``<at>...</at>`` text Teams marks.
    """
    text = activity.text or ""
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        if (entity.type or "").lower() != "mention":
            continue
        extra = entity.additional_properties or {}
        mentioned = _as_dict(extra.get("mentioned"))
        marked = extra.get("text")
        if mentioned.get("id") == bot_id and isinstance(marked, str) and marked:
            text = text.replace(marked, "")
    return text


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _card_response(answer: CardAnswer) -> InvokeResponse:
    if answer.card is None:
        return _error(answer.error_status or 500, "Refused", answer.error_message)
    return InvokeResponse(
        status=200,
        body=AdaptiveCardInvokeResponse(status_code=200, type=CARD_CONTENT_TYPE, value=answer.card),
    )


def _error(status: int, code: str, message: str) -> InvokeResponse:
    # Teams shows the message to the clicker; the HTTP status stays 200 as the protocol asks.
    # The message may quote ids from the click or Graph's words: shown as plain, inert text.
    return InvokeResponse(
        status=200,
        body=AdaptiveCardInvokeResponse(
            status_code=status,
            type=ERROR_CONTENT_TYPE,
            value={"code": code, "message": plain(message, ERROR_MESSAGE_CHARS)},
        ),
    )
