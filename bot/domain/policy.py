"""Who may act, and how much sign-off each action needs. Pure data."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from bot.domain.models import Frozen, ResponseAction


class Policy(Frozen):
    """The rules every click is checked against.

    An empty ``responders`` set means nobody may act: the bot fails closed.
    ``approvals`` is the number of distinct people (the requester included) who must sign off.
    """

    responders: frozenset[str] = frozenset()
    approvals: dict[ResponseAction, int] = Field(default_factory=dict)
    expiry: timedelta = timedelta(minutes=30)

    def is_responder(self, object_id: str) -> bool:
        """Whether this Entra object id may request actions."""
        return object_id.lower() in {r.lower() for r in self.responders}

    def approvals_for(self, action: ResponseAction) -> int:
        """Distinct sign-offs ``action`` needs (1 unless the policy says otherwise)."""
        return self.approvals.get(action, 1)
