"""What the chat commands read: roles, pending requests, an identity's history, the channel.

Owns :class:`Queries`: reads only, nothing here changes state.
"""

from __future__ import annotations

from typing import Any

from bot.domain.models import ActionRequest, Case, ChannelRef
from bot.domain.policy import ActorRoles
from bot.services.ports import Ports
from bot.services.views import OPEN_STATES


class Queries:
    """Chat-facing reads of the store and the directory."""

    def __init__(self, ports: Ports) -> None:
        self._store = ports.store
        self._directory = ports.directory

    async def roles_of(self, object_id: str) -> ActorRoles:
        """What the policy makes of this person right now."""
        return await self._directory.roles_of(object_id)

    async def pending_requests(self) -> list[tuple[Case, ActionRequest]]:
        """Open requests with their cases, oldest first."""
        result = []
        for request in await self._store.list_requests_in(OPEN_STATES):
            case = await self._store.get_case(request.case_id)
            if case is not None:
                result.append((case, request))
        return result

    async def history(self, upn: str) -> list[Any]:
        """Audit events about one identity, oldest first."""
        return list(await self._store.list_audit(identity=upn.strip().lower()))

    async def thread_of_card(self, activity_id: str) -> str | None:
        """The thread (conversation id ``<channel>;messageid=<root>``) of a card the bot posted as
        a reply in another card's thread, by its activity id: a campaign member's card sits in its
        campaign card's thread (Teams threads are flat). ``None`` for anything else."""
        for campaign in await self._store.list_campaigns():
            if campaign.card is None or campaign.card.activity_id == activity_id:
                continue
            for case in await self._store.list_campaign_cases(campaign.id):
                card = case.card
                if (
                    card is not None
                    and card.activity_id == activity_id
                    and ";messageid=" in card.conversation_id
                ):
                    return card.conversation_id
        return None

    async def channel(self) -> ChannelRef | None:
        """The incident channel, if known."""
        return await self._store.get_channel()
