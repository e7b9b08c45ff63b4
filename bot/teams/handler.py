"""The activity handler: turns Teams activities into service calls and answers in Teams' terms."""

from __future__ import annotations

import logging
from typing import Any

from botbuilder.core import ActivityHandler, InvokeResponse, MessageFactory, TurnContext
from botbuilder.schema import Activity, AdaptiveCardInvokeResponse

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


class TeamsBot(ActivityHandler):
    """Routes activities to :class:`RemediationService`."""

    def __init__(self, service: RemediationService) -> None:
        self._service = service
        self._commands = ChatCommands(service)

    async def on_turn(self, turn_context: TurnContext) -> None:
        """Every activity from the incident channel refreshes the channel reference first."""
        await self._capture_channel(turn_context.activity)
        await super().on_turn(turn_context)

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        """Answer ``adaptiveCard/action`` ourselves (the SDK's own route crashes on 4.17.1)."""
        activity = turn_context.activity
        if activity.name != CARD_ACTION_INVOKE:
            return await super().on_invoke_activity(turn_context)
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
        text = TurnContext.remove_recipient_mention(activity) if activity.entities else (activity.text or "")
        sender = activity.from_property
        actor = Actor(
            object_id=getattr(sender, "aad_object_id", None) or "",
            name=(sender.name or "") if sender else "",
        )
        reply = await self._commands.run(actor, (text or "").strip())
        await turn_context.send_activity(MessageFactory.text(reply))

    async def _capture_channel(self, activity: Activity) -> None:
        channel_data: dict[str, Any] = (
            activity.channel_data if isinstance(activity.channel_data, dict) else {}
        )
        team = channel_data.get("team") or {}
        channel = channel_data.get("channel") or {}
        conversation_id = (activity.conversation.id if activity.conversation else "") or ""
        channel_id = channel.get("id") or team.get("id") or conversation_id.partition(";")[0]
        if not channel_id or not activity.service_url or not team:
            return
        tenant = (channel_data.get("tenant") or {}).get("id") or (
            activity.conversation.tenant_id if activity.conversation else None
        )
        recipient = activity.recipient
        ref = ChannelRef(
            channel_id=channel_id,
            service_url=activity.service_url,
            tenant_id=tenant,
            team_id=team.get("id"),
            bot_id=recipient.id if recipient else None,
            bot_name=recipient.name if recipient else None,
        )
        if await self._service.register_channel(ref):
            self._service.schedule_publish()


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
