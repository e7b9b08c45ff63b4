"""What the bot does with an activity, whichever SDK carried it in: Teams' JSON in, answers out.

Both Teams transports (botbuilder in :mod:`bot.teams`, the Microsoft 365 Agents SDK in
:mod:`bot.teams_agents`) authenticate the request and open the turn in their SDK's terms, then hand
the activity's raw JSON (already checked by :func:`bot.teams.shape.activity_problem`) to
:class:`ActivityRouter`. It refuses another tenant's activity, answers card actions, runs chat
commands and remembers the incident channel, and says how the turn ended in a :class:`TurnOutcome`
that :mod:`bot.teams.edge` turns into the HTTP answer. Nothing here imports either SDK.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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
BOT_FRAMEWORK_ACTOR = "bot-framework"
_MAX_DETAIL = 200
_INSTALLATION_TYPES = frozenset({"conversationUpdate", "installationUpdate"})

SendText = Callable[[str, str | None], Awaitable[None]]
"""Sends a plain text reply answering the activity, into the channel thread named (a conversation
id), or into the activity's own conversation when ``None`` (the SDK's turn does the sending)."""
# A Teams message id (a number) or a Bot Connector activity id: what may name a thread root.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9:@._-]{1,128}")


@dataclass(frozen=True)
class Refusal:
    """Why an activity was refused before the bot looked at it; the edge answers 403."""

    reason: str


@dataclass(frozen=True)
class InvokeAnswer:
    """The HTTP answer to an invoke: its status and JSON body."""

    status: int
    body: dict[str, Any]


@dataclass
class TurnOutcome:
    """How one turn ended, for the HTTP answer."""

    refusal: Refusal | None = None
    invoke: InvokeAnswer | None = None
    failure: Exception | None = field(default=None)


class ActivityRouter:
    """Routes activities to :class:`RemediationService`, from the configured tenant only."""

    def __init__(self, service: RemediationService, tenant_id: str) -> None:
        self._service = service
        self._commands = ChatCommands(service)
        self._tenant_id = tenant_id.strip().lower()

    async def run(self, activity: dict[str, Any], send_text: SendText) -> TurnOutcome:
        """Run the turn; a failure is kept in the outcome (the edge answers it), not raised."""
        outcome = TurnOutcome()
        try:
            await self._route(activity, send_text, outcome)
        except Exception as exc:  # answered by the edge: 503 for ours, a logged 500 for the rest
            outcome.failure = exc
        return outcome

    async def _route(self, activity: dict[str, Any], send_text: SendText, outcome: TurnOutcome) -> None:
        """Refuse another tenant's activity; dispatch; then refresh the channel reference.

        The tenant is checked first, before anything reads the activity's content: a click, a
        message or an installation from another tenant (or naming none) runs nothing, is logged
        once and audited, and is answered 403 without sending anything back. The channel
        reference is refreshed only from an activity the bot accepted: a refused click changes
        nothing at all, and neither does a click answered with an error.
        """
        reason = self._tenant_problem(activity)
        if reason is not None:
            outcome.refusal = Refusal(reason)
            await self._service.refuse_activity(reason, **_refusal_details(activity))
            return
        kind = activity.get("type")
        if kind == "invoke":
            outcome.invoke = await self._answer_invoke(activity)
            value = outcome.invoke.body.get("type")
            if outcome.invoke.status >= 400 or value == ERROR_CONTENT_TYPE:
                return  # declined: nothing else is written
        elif kind == "message":
            await self._run_command(activity, send_text)
        try:
            await self._capture_channel(activity)
        except RemediationError as exc:
            if kind in _INSTALLATION_TYPES:
                raise  # registering the channel is this activity's whole point: answer 503
            # A click or a message was handled; the next activity from the channel tries again.
            log.warning(
                "the channel reference could not be refreshed from %s: %s", activity.get("id"), exc.message
            )

    def _tenant_problem(self, activity: dict[str, Any]) -> str | None:
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

    async def _answer_invoke(self, activity: dict[str, Any]) -> InvokeAnswer:
        """Answer ``adaptiveCard/action``; other invokes (sign-in, messaging extensions, task
        modules) are not features of this bot: they get a 400 instead of an SDK's 501."""
        if activity.get("name") != CARD_ACTION_INVOKE:
            return InvokeAnswer(
                400,
                {
                    "error": {
                        "code": "BadRequest",
                        "message": "This bot answers only Adaptive Card actions; nothing was done.",
                    }
                },
            )
        value = _as_dict(activity.get("value"))
        action = _as_dict(value.get("action"))
        verb = action.get("verb")
        data = _as_dict(action.get("data"))
        sender = _as_dict(activity.get("from"))
        object_id = sender.get("aadObjectId")
        if action.get("type") != "Action.Execute" or not isinstance(verb, str):
            return _error(
                400, "BadRequest", "This is not a card action the bot understands; nothing was done."
            )
        if not object_id:
            return _error(401, "Unauthorized", "Teams did not say who clicked, so the bot did nothing.")
        actor = Actor(object_id=object_id, name=sender.get("name") or "", teams_id=sender.get("id") or "")
        try:
            answer = await self._service.handle_card_action(actor, verb, data)
        except RemediationError as exc:
            # The edge: one log line with the ids, and a sentence for the person who clicked.
            log.error(
                "card action %s by %s failed (activity %s, case %s, request %s): %s",
                verb,
                object_id,
                activity.get("id"),
                data.get("caseId"),
                data.get("requestId"),
                exc.message,
            )
            return _error(
                503, "Unavailable", f"The bot could not complete that just now: {exc.message} Try again."
            )
        return _card_response(answer)

    async def _run_command(self, activity: dict[str, Any], send_text: SendText) -> None:
        """Chat commands: ``help``, ``pending``, ``history <upn>``."""
        text = _without_bot_mention(activity)
        sender = _as_dict(activity.get("from"))
        actor = Actor(object_id=sender.get("aadObjectId") or "", name=sender.get("name") or "")
        reply = await self._commands.run(actor, text.strip())
        try:
            thread = await self._thread_of(activity)
        except RemediationError as exc:
            # Answered in the message's own conversation (as the SDKs answer) rather than not.
            log.warning("the thread of message %s could not be read: %s", activity.get("id"), exc.message)
            thread = None
        try:
            await send_text(reply, thread)
        except Exception as exc:  # aiohttp, msrest and each SDK raise their own types
            # The command has run; answering the activity with an error would only make the
            # channel resend it. One line, so a broken connector is visible.
            log.warning(
                "the reply to message %s could not be sent to %s: %s",
                activity.get("id"),
                activity.get("serviceUrl"),
                type(exc).__name__,
            )

    async def _thread_of(self, activity: dict[str, Any]) -> str | None:
        """The thread a message in a channel was asked in, when the SDK's own answer (to the
        activity's conversation) could land elsewhere; ``None`` when it lands right.

        Teams threads are flat: a message asked under a card the bot posted inside another
        card's thread (a campaign member's card, in its campaign card's thread) belongs to that
        thread. Its root is the one the conversation id names (``;messageid=``), else the message
        it answers (``replyToId``), else the message itself; a root that is such a member card is
        replaced by its campaign card's thread. Only ids of a sane shape are used.
        """
        conversation = _as_dict(activity.get("conversation"))
        conversation_id = conversation.get("id")
        if not isinstance(conversation_id, str) or not conversation_id or not _in_channel(activity):
            return None
        channel, _, named = conversation_id.partition(";messageid=")
        root = named or activity.get("replyToId") or activity.get("id") or ""
        if not channel or not isinstance(root, str) or not _MESSAGE_ID.fullmatch(root):
            return None
        thread = await self._service.thread_of_card(root) or f"{channel};messageid={root}"
        return None if thread == conversation_id else thread

    async def _capture_channel(self, activity: dict[str, Any]) -> None:
        """Remember the incident channel's reference (only called for the configured tenant)."""
        channel_data = _as_dict(activity.get("channelData"))
        team = _as_dict(channel_data.get("team"))
        channel = _as_dict(channel_data.get("channel"))
        conversation_id = _as_dict(activity.get("conversation")).get("id") or ""
        channel_id = channel.get("id") or team.get("id") or conversation_id.partition(";")[0]
        service_url = activity.get("serviceUrl")
        if not channel_id or not service_url or not team:
            return
        recipient = activity.get("recipient")
        ref = ChannelRef(
            channel_id=channel_id,
            service_url=service_url,
            tenant_id=self._tenant_id,
            team_id=team.get("id"),
            bot_id=recipient.get("id") if isinstance(recipient, dict) else None,
            bot_name=recipient.get("name") if isinstance(recipient, dict) else None,
        )
        sender = _as_dict(activity.get("from"))
        actor = Actor(
            object_id=sender.get("aadObjectId") or BOT_FRAMEWORK_ACTOR, name=sender.get("name") or ""
        )
        if await self._service.register_channel(ref, actor=actor):
            self._service.schedule_publish()


def _tenants(activity: dict[str, Any]) -> list[Any]:
    """Every tenant the activity names: ``channelData.tenant.id`` and ``conversation.tenantId``
    (botbuilder's model spells it ``tenantID``; Teams sends ``tenantId``: either counts)."""
    named: list[Any] = []
    tenant = _as_dict(_as_dict(activity.get("channelData")).get("tenant"))
    if tenant.get("id") is not None:
        named.append(tenant.get("id"))
    conversation = _as_dict(activity.get("conversation"))
    for key in ("tenantID", "tenantId"):
        if conversation.get(key) is not None:
            named.append(conversation[key])
    return named


def _refusal_details(activity: dict[str, Any]) -> dict[str, str]:
    """What the audit event and the log line say about a refused activity (bounded, as data)."""
    sender = activity.get("from")
    sender = sender if isinstance(sender, dict) else None
    tenants = [str(t) for t in _tenants(activity)]

    def cut(value: Any) -> str:
        text = "" if value is None else str(value)
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"

    conversation = activity.get("conversation")
    return {
        "activity_type": cut(activity.get("type")),
        "activity_id": cut(activity.get("id")),
        "tenant": cut(", ".join(tenants)),
        "object_id": cut(sender.get("aadObjectId") if sender else None),
        "name": cut(sender.get("name") if sender else None),
        "service_url": cut(activity.get("serviceUrl")),
        "conversation_id": cut(conversation.get("id") if isinstance(conversation, dict) else None),
    }


def _without_bot_mention(activity: dict[str, Any]) -> str:
    """The message text with the @mention of the bot taken out (plain text replacement).

    botbuilder's own helper compiles the mention's text as a regular expression and crashes on
    mentions without a name; this only removes the exact ``<at>...</at>`` text Teams marks.
    """
    text = activity.get("text") or ""
    bot_id = _as_dict(activity.get("recipient")).get("id")
    for entity in activity.get("entities") or []:
        entity = _as_dict(entity)
        if (entity.get("type") or "").lower() != "mention":
            continue
        mentioned = _as_dict(entity.get("mentioned"))
        marked = entity.get("text")
        if mentioned.get("id") == bot_id and isinstance(marked, str) and marked:
            text = text.replace(marked, "")
    return str(text)


def _in_channel(activity: dict[str, Any]) -> bool:
    kind = _as_dict(activity.get("conversation")).get("conversationType")
    channel_data = _as_dict(activity.get("channelData"))
    in_channel = isinstance(kind, str) and kind.lower() == "channel"
    return in_channel or bool(_as_dict(channel_data.get("channel")))


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _card_response(answer: CardAnswer) -> InvokeAnswer:
    if answer.card is None:
        return _error(answer.error_status or 500, "Refused", answer.error_message)
    return InvokeAnswer(200, {"statusCode": 200, "type": CARD_CONTENT_TYPE, "value": answer.card})


def _error(status: int, code: str, message: str) -> InvokeAnswer:
    # Teams shows the message to the clicker; the HTTP status stays 200 as the protocol asks.
    # The message may quote ids from the click or Graph's words: shown as plain, inert text.
    return InvokeAnswer(
        200,
        {
            "statusCode": status,
            "type": ERROR_CONTENT_TYPE,
            "value": {"code": code, "message": plain(message, ERROR_MESSAGE_CHARS)},
        },
    )
