"""Chat commands: data from the service, rendered as short Teams markdown replies."""

from __future__ import annotations

from bot.domain.models import Actor
from bot.services import RemediationService
from cards.case import format_time, request_headline

HELP = (
    "**remediation-bot** posts one card per compromised identity in the incident channel. "
    "Responders act from the card: type a reason, then pick an action; approvers sign off there too.\n\n"
    "Commands: `help` (this), `pending` (requests waiting for a decision), "
    "`history <upn>` (the audit trail for a user), `contain <upn>` (open a case by hand)."
)
MAX_HISTORY_LINES = 30


class ChatCommands:
    """Parses a message and answers it; unknown commands get the help text."""

    def __init__(self, service: RemediationService) -> None:
        self._service = service

    async def run(self, actor: Actor, text: str) -> str:
        """The reply to ``text`` from ``actor``."""
        word, _, rest = text.strip().partition(" ")
        command = word.lower()
        if command in ("", "help"):
            return HELP
        if command == "contain":
            target = rest.strip()
            if "@" not in target:
                return "Say whose case to open: `contain adele.vance@contoso.com`."
            return await self._service.contain(actor, target)
        if command not in ("pending", "history"):
            return f"I don't know the command “{word}”.\n\n{HELP}"
        roles = await self._service.roles_of(actor.object_id)
        if not (roles.responder or roles.approver):
            return "Only responders and approvers can see requests and audit history."
        if command == "pending":
            return await self._pending()
        return await self._history(rest.strip())

    async def _pending(self) -> str:
        pending = await self._service.pending_requests()
        if not pending:
            return "No requests are waiting for a decision."
        channel = await self._service.channel()
        lines = [f"**{len(pending)} request(s) waiting:**"]
        for case, request in pending:
            link = ""
            if case.card is not None and channel is not None:
                url = f"https://teams.microsoft.com/l/message/{channel.channel_id}/{case.card.activity_id}"
                link = f" — [open the card]({url})"
            lines.append(
                f"- {request_headline(request)} for {case.identity.label}, "
                f"asked by {request.requester.label}, expires {format_time(request.expires_at)}{link}"
            )
        return "\n".join(lines)

    async def _history(self, upn: str) -> str:
        if not upn or "@" not in upn:
            return "Say whose history: `history adele.vance@contoso.com`."
        events = await self._service.history(upn)
        if not events:
            return f"No audit events for {upn}."
        shown = events[-MAX_HISTORY_LINES:]
        cut = ", latest shown" if len(events) > len(shown) else ""
        lines = [f"**Audit trail for {upn}** ({len(events)} event(s){cut}):"]
        for event in shown:
            detail = (
                event.payload.get("reason")
                or event.payload.get("summary")
                or event.payload.get("title")
                or ""
            )
            lines.append(
                f"- {format_time(event.at)} #{event.sequence} {event.kind} by {event.actor_name}"
                + (f": {detail}" if detail else "")
            )
        return "\n".join(lines)
