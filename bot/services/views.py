"""Reading cases and requests, and rendering a case's card from them.

Owns :class:`CaseViews`: the shared card the channel shows, the card answering one person's
click (personal buttons only on refresh), and the reads every use case needs (a case that must
exist, a case's latest request).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bot.domain.models import ActionRequest, Actor, Case, RequestState
from bot.errors import StoreError
from bot.store.base import Store
from bot.tenant.directory import Directory
from cards.case import PortalLinks, Viewer, render_case

OPEN_STATES = (RequestState.PENDING, RequestState.APPROVED)
MAX_REFRESH_USERS = 60


class CaseViews:
    """Cases and their cards, as the channel and a clicker see them."""

    def __init__(self, store: Store, directory: Directory, links: PortalLinks, page_url: str = "") -> None:
        self._store = store
        self._directory = directory
        self._links = links
        self._page_url = page_url.rstrip("/")

    def page_link(self, case: Case) -> str:
        """The case's approval page (empty when the page is off); built from our own ids only."""
        return f"{self._page_url}/approve/{quote(case.id, safe='')}" if self._page_url else ""

    async def require_case(self, case_id: str) -> Case:
        """The case, which must exist."""
        case = await self._store.get_case(case_id)
        if case is None:
            raise StoreError(f"case {case_id} vanished")
        return case

    async def find_case(self, case_id: str) -> Case | None:
        """The case, if there is one."""
        return await self._store.get_case(case_id)

    async def latest_request(self, case_id: str) -> ActionRequest | None:
        """The case's newest request, if any."""
        requests = await self._store.list_requests(case_id)
        return requests[-1] if requests else None

    async def shared_card(self, case: Case, *, note: str | None = None) -> dict[str, Any]:
        """The card everyone in the channel sees."""
        request = await self.latest_request(case.id)
        return render_case(
            case,
            request,
            links=self._links,
            note=note,
            refresh_user_ids=self._refresh_ids(request),
            page_url=self.page_link(case),
        )

    async def card_for(
        self, case: Case, actor: Actor, *, note: str | None = None, personal: bool = False
    ) -> dict[str, Any]:
        """The card answering ``actor``'s click.

        A click is answered with the shared card (plus ``note``): the same card the channel gets
        by update, so whichever reaches the client last shows the same buttons. Only a
        ``refresh`` (Teams' per-user view for the requester and approvers) gets ``personal``
        buttons.
        """
        request = await self.latest_request(case.id)
        viewer = None
        if personal:
            roles = await self._directory.roles_of(actor.object_id)
            viewer = Viewer(actor=actor, responder=roles.responder, approver=roles.approver)
        return render_case(
            case,
            request,
            links=self._links,
            note=note,
            viewer=viewer,
            refresh_user_ids=self._refresh_ids(request),
            page_url=self.page_link(case),
        )

    def _refresh_ids(self, request: ActionRequest | None) -> list[str]:
        if request is None or request.state not in OPEN_STATES:
            return []
        people = [request.requester, *request.approvals]
        ids = [p.teams_id for p in people if p.teams_id]
        return list(dict.fromkeys(ids))[:MAX_REFRESH_USERS]
