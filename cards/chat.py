"""Chat answers: what the bot replies to ``help``, ``pending``, ``history`` and ``contain``.

Answers are Teams message text (markdown). The bot's own words carry the formatting; every
value from outside — the command word and its argument, names, reasons, titles, the sentence a
use case returns — goes through :func:`cards.text.inert`. Lists stop with "and N more" before
the answer outgrows :data:`cards.text.MESSAGE_BUDGET`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from bot.domain.models import ActionRequest, Case, ChannelRef
from cards.case import format_time, request_headline
from cards.links import MAX_ID_IN_URL
from cards.text import MESSAGE_BUDGET, Limits, fit, inert, json_size, plain

HELP = (
    "**remediation-bot** posts one card per compromised identity in the incident channel. "
    "Responders act from the card: type a reason, then pick an action; approvers sign off there too.\n\n"
    "Commands: `help` (this), `pending` (requests waiting for a decision), "
    "`history <upn>` (the audit trail for a user), `contain <upn>` (open a case by hand)."
)
MAX_HISTORY_LINES = 30
TEAMS_MESSAGE_LINK = "https://teams.microsoft.com/l/message"
_KIND = re.compile(r"[a-z]+(?:[._][a-z]+)*")


def render_sentence(text: str) -> str:
    """A sentence a use case answered with (it may quote names and UPNs), as inert text."""
    return fit(lambda limits: inert(text, limits.long + limits.name))


def render_unknown_command(word: str) -> str:
    """The answer to a command the bot does not know."""
    return f"I don't know the command “{inert(word, 40, quoted=True)}”.\n\n{HELP}"


def render_pending(pending: Sequence[tuple[Case, ActionRequest]], channel: ChannelRef | None) -> str:
    """Open requests, oldest first, each with a link to its card when the bot knows where it is."""
    if not pending:
        return "No requests are waiting for a decision."

    def render(limits: Limits) -> str:
        lines = []
        for case, request in pending[: limits.items]:
            link = _card_link(case, channel)
            lines.append(
                f"- {inert(request_headline(request, limits), limits.short)} "
                f"for {inert(case.identity.label, limits.name)}, "
                f"asked by {inert(request.requester.label, limits.name)}, "
                f"expires {format_time(request.expires_at)}" + (f" — [open the card]({link})" if link else "")
            )
        return _listed(f"**{len(pending)} request(s) waiting:**", lines, len(pending))

    return fit(render)


def render_history(upn: str, events: Sequence[Any]) -> str:
    """The audit events about one identity, the latest :data:`MAX_HISTORY_LINES` of them."""

    def render(limits: Limits) -> str:
        who = inert(upn, limits.name)
        if not events:
            return f"No audit events for {who}."
        shown = events[-min(MAX_HISTORY_LINES, limits.items) :]
        cut = ", latest shown" if len(events) > len(shown) else ""
        lines = []
        for event in shown:
            detail = (
                event.payload.get("reason")
                or event.payload.get("summary")
                or event.payload.get("title")
                or ""
            )
            lines.append(
                f"- {format_time(event.at)} #{event.sequence} {_kind(event.kind, limits)} "
                f"by {inert(event.actor_name, limits.name)}"
                + (f": {inert(detail, limits.short)}" if detail else "")
            )
        return _listed(f"**Audit trail for {who}** ({len(events)} event(s){cut}):", lines, len(shown))

    return fit(render)


def _kind(kind: str, limits: Limits) -> str:
    # Event kinds are the bot's own words (``request.opened``); anything else is shown inert.
    return kind if _KIND.fullmatch(kind) and plain(kind, limits.name) == kind else inert(kind, limits.name)


def _card_link(case: Case, channel: ChannelRef | None) -> str | None:
    """The card's message in Teams, when the bot knows where it is (ids of a sane length)."""
    if case.card is None or channel is None:
        return None
    ids = (channel.channel_id, case.card.activity_id)
    if not all(0 < len(i) <= MAX_ID_IN_URL for i in ids):
        return None
    link = f"{TEAMS_MESSAGE_LINK}/{quote(ids[0], safe=':@')}/{quote(ids[1], safe='')}"
    # A card posted as a reply (a campaign member's card, in its campaign card's thread) opens in
    # its thread only when the link names the thread's root message as well.
    root = case.card.conversation_id.partition(";messageid=")[2]
    if root and root != case.card.activity_id and len(root) <= MAX_ID_IN_URL:
        link += f"?parentMessageId={quote(root, safe='')}"
    return link


def _listed(header: str, lines: Sequence[str], total: int) -> str:
    """``header`` and as many of ``lines`` as fit, then "… and N more" (of ``total``)."""
    kept: list[str] = []
    size = json_size(header)
    for line in lines:
        size += json_size(line)
        if size > MESSAGE_BUDGET - 200:
            break
        kept.append(line)
    more = total - len(kept)
    tail = [f"… and {more} more"] if more else []
    return "\n".join([header, *kept, *tail])
