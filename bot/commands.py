"""Chat commands: parse a message, ask the service, and let :mod:`cards.chat` render the answer."""

from __future__ import annotations

from bot.domain.models import Actor
from bot.services import RemediationService
from cards.chat import HELP, render_history, render_pending, render_sentence, render_unknown_command

__all__ = ["HELP", "ChatCommands"]


class ChatCommands:
    """Parses a message and answers it; unknown commands get the help text."""

    def __init__(self, service: RemediationService) -> None:
        self._service = service

    async def run(self, actor: Actor, text: str) -> str:
        """The reply to ``text`` from ``actor`` (markdown in which nothing from outside is markup)."""
        word, _, rest = text.strip().partition(" ")
        command = word.lower()
        if command in ("", "help"):
            return HELP
        if command == "contain":
            target = rest.strip()
            if "@" not in target:
                return "Say whose case to open: `contain adele.vance@contoso.com`."
            return render_sentence(await self._service.contain(actor, target))
        if command not in ("pending", "history"):
            return render_unknown_command(word)
        roles = await self._service.roles_of(actor.object_id)
        if not (roles.responder or roles.approver):
            return "Only responders and approvers can see requests and audit history."
        if command == "pending":
            return render_pending(await self._service.pending_requests(), await self._service.channel())
        upn = rest.strip()
        if not upn or "@" not in upn:
            return "Say whose history: `history adele.vance@contoso.com`."
        return render_history(upn, await self._service.history(upn))
