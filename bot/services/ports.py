"""The ports the use cases work through, and what a click is answered with.

Owns :class:`Messenger` (the incident channel, implemented by ``bot.teams``), :class:`Ports`
(every outside part a use case may reach: store, Graph, directory, channel, policy, clock and
id source), :class:`ServiceSettings` (the few numbers and strings that tune the use cases) and
:class:`CardAnswer`. Nothing here does any work.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.domain.models import Actor, CardRef, ChannelRef
from bot.domain.policy import Policy, StepUp
from bot.graph import GraphClient
from bot.store.base import Store
from bot.tenant.bulk import BulkResult, BulkTarget, TargetFields
from bot.tenant.directory import Directory
from cards.case import DEFAULT_LINKS, PortalLinks


class Messenger(Protocol):
    """The incident channel, in the product's verbs (implemented by ``bot.teams``)."""

    async def post_card(self, channel: ChannelRef, card: dict[str, Any]) -> CardRef:
        """Start a thread with ``card``."""

    async def update_card(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> None:
        """Replace the card for everyone."""

    async def reply_in_thread(
        self, channel: ChannelRef, ref: CardRef, text: str, mentions: Sequence[Actor] = ()
    ) -> str:
        """Reply under the card, @mentioning ``mentions``."""

    async def post_card_in_thread(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> CardRef:
        """Post ``card`` as a reply under the card ``ref``; where it landed (it can be updated)."""


class BulkActions(Protocol):
    """Runs one action on many identities, verified by reading back: the Graph JSON batching
    layer (:class:`bot.tenant.bulk.BulkActions`), or :class:`bot.services.bulk.OneByOne`
    running the single-identity executor per target. Targets and results are
    :class:`bot.tenant.bulk.BulkTarget` and :class:`bot.tenant.bulk.BulkResult`."""

    async def run(
        self, action: str, targets: Sequence[TargetFields], *, deadline: float | None = None
    ) -> list[BulkResult]:
        """One result per target, in any order (matched by ``key``); targets never sent are
        ``failed`` with the reason."""

    async def verify(
        self, action: str, targets: Sequence[TargetFields], *, since: datetime, deadline: float | None = None
    ) -> list[BulkResult]:
        """Finish targets a stopped worker dispatched at ``since``: read back only, nothing is
        sent again; what does not show is ``failed`` ("not sent again")."""


__all__ = ["BulkActions", "BulkResult", "BulkTarget", "CardAnswer", "Messenger", "Ports", "ServiceSettings"]


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Ports:
    """The outside parts every use case is wired to (by :func:`bot.web.app.create_app`)."""

    store: Store
    graph: GraphClient
    directory: Directory
    messenger: Messenger
    policy: Policy
    clock: Callable[[], datetime]
    new_id: Callable[[], str] = field(default=_new_id)
    # The clock and sleep that time the coalescing of card updates (tests move them).
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass(frozen=True)
class ServiceSettings:
    """How the use cases are tuned (from :class:`bot.config.Settings`)."""

    channel_id: str
    links: PortalLinks = DEFAULT_LINKS
    recheck_after: timedelta = timedelta(minutes=2)
    alert_status: str = ""
    coalesce_seconds: float = 3.0
    job_lease: timedelta = timedelta(minutes=1)
    card_lease: timedelta = timedelta(minutes=1)
    # The approval page's base URL (APPROVAL_PAGE_URL); empty: the page is off.
    approval_page_url: str = ""
    # Bulk actions: Graph JSON batches (chunks of 20 identities) in flight at once
    # (GRAPH_BATCH_CONCURRENCY).
    batch_concurrency: int = 4


@dataclass(frozen=True)
class CardAnswer:
    """What the clicker sees: a card that replaces theirs, or an error with a sentence."""

    card: dict[str, Any] | None = None
    error_status: int = 0
    error_message: str = ""
    # Why nothing was done ("" when the click counted); ``stale``: the card was out of date.
    refusal: str = ""
    stale: bool = False
    # Set when the decision did not count for want of this fresh sign-in (the page then asks for it).
    step_up: StepUp | None = None
