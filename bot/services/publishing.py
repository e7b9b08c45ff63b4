"""Cards in the incident channel: posting, updating, coalescing, and the publishing lease.

Owns :class:`Publisher`: one card per case, posted once across every replica (the case's
publishing lease, taken by compare-and-swap), alert-driven updates coalesced per card, clicks
and results sent at once, escalation notes queued until the card they go under is sent, cards
left behind by a replica that died sent by whoever publishes next, and the thread note that
follows a request's change of state (:meth:`Publisher.announce`).

The per-case state it keeps in memory (locks, last update times, deferred updates, queued
escalation notes) is dropped when the case is idle or closed, so it does not grow with the
number of cases ever seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from bot.domain.models import Actor, CardRef, Case, CaseStatus, ChannelRef
from bot.errors import RemediationError, TeamsError, TeamsOutcomeUnknown
from bot.faults import fault_point
from bot.services.card_lease import CardLease
from bot.services.enrichment import Enricher
from bot.services.ports import Ports, ServiceSettings
from bot.services.tasks import TaskSupervisor, renewing
from bot.services.views import CaseViews
from bot.web.metrics import Metrics
from cards.replies import render_request_note

log = logging.getLogger(__name__)

CLAIM_RETRY_SECONDS = 2.0
# On a case's card posted again because an earlier post's fate is unknown (its replica died, or
# Teams' answer was lost), and on the spare copy when both landed.
REPOSTED_NOTE = (
    "Posted again after a restart: an earlier copy of this card may be in the channel. "
    "This one is kept up to date."
)
SPARE_NOTE = "This copy is out of date: the case's card was posted again and that one is kept up to date."


class Publisher:
    """Brings the cards in the channel up to date with the cases in the store."""

    def __init__(
        self,
        ports: Ports,
        settings: ServiceSettings,
        *,
        views: CaseViews,
        enricher: Enricher,
        tasks: TaskSupervisor,
        metrics: Metrics,
        replica: str,
    ) -> None:
        self._store = ports.store
        self._messenger = ports.messenger
        self._clock = ports.clock
        self._monotonic = ports.monotonic
        self._sleep = ports.sleep
        self._settings = settings
        self._views = views
        self._enricher = enricher
        self._tasks = tasks
        self._metrics = metrics
        self._lease: CardLease[Case] = CardLease(
            ports.store.swap_case, ports.clock, settings.card_lease, replica
        )
        self._publisher: asyncio.Task[Any] | None = None
        self._publish_again = False
        self._case_locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self._last_update: dict[str, float] = {}
        self._deferred: set[str] = set()
        self._escalations: dict[str, list[str]] = {}
        # Brings the campaign cards up to date (storm mode); set by the service. Run after the
        # case cards: a member's card asked for before its campaign card is out waits a pass.
        self.campaign_cards: Callable[[], Awaitable[None]] | None = None

    def queue_escalation(self, case_id: str, note: str) -> None:
        """Reply ``note`` under the case's card when it is next sent."""
        self._escalations.setdefault(case_id, []).append(note)

    def schedule_publish(self) -> None:
        """Bring every card up to date in the background, one pass at a time.

        A push storm asks for this once per request: requests that arrive during a pass only
        mark it to run once more, so there is never more than one pass (and one list of every
        case in memory) at a time.
        """
        if self._publisher is not None and not self._publisher.done():
            self._publish_again = True
            return
        self._publisher = self._tasks.spawn(self._publish_passes(), name="publisher")

    async def _publish_passes(self) -> None:
        while True:
            self._publish_again = False
            await self.publish_cards()
            if not self._publish_again:
                return

    async def publish_cards(self) -> None:
        """Post a card for every case that has none, and update every card that is behind."""
        channel = await self._store.get_channel()
        if channel is None:
            log.warning(
                "cards wait: the bot has not been installed in the team of TEAMS_CHANNEL_ID (%s) yet",
                self._settings.channel_id,
            )
            return
        for case in await self._store.list_cases_needing_publishing():
            if case.needs_publishing:
                try:
                    await self.publish(case.id, channel)
                except RemediationError as exc:
                    # This card is retried at the next publish; the others must not wait on it.
                    log.error("case %s: card could not be sent: %s", case.id, exc.message)
        if self.campaign_cards is not None:
            await self.campaign_cards()
        self._forget_idle()

    async def publish(self, case_id: str, channel: ChannelRef, *, urgent: bool = False) -> Case:
        """Post the case's card, or update it; alert-driven updates of one card are coalesced.

        ``urgent`` (a responder's click, an action's result) updates at once; an alert storm
        updates each card at most once per coalescing window, with the latest state.
        """
        # One publisher per case at a time keeps posts and updates in order and posts once.
        async with self._case_lock(case_id):
            case = await self._views.require_case(case_id)
            if not case.needs_publishing:
                # A deferred update that finds the card already current (a click's update sent
                # it first) is the last word on a closed case: forget it here too.
                self._forget_if_closed(case)
                return case
            if case.card is not None and not urgent:
                wait = self._settings.coalesce_seconds - (
                    self._monotonic() - self._last_update.get(case_id, -math.inf)
                )
                if wait > 0:
                    self._defer(case_id, channel, wait, f"coalesce-{case_id}")
                    return case
            claimed = await self._lease.claim(case_id)
            if claimed is None:
                # Another replica is sending this card and may have rendered an older state:
                # look again shortly, so the newest state reaches the channel too.
                self._defer(case_id, channel, CLAIM_RETRY_SECONDS, f"reclaim-{case_id}")
                return case
            case = claimed
            posted: CardRef | None = None
            sending = False
            # The lease is renewed while Teams' retries run (they can outlast any fixed lease),
            # so another replica takes the card over only when this one is dead or stopped.
            async with renewing(
                partial(self._lease.renew, case_id),
                self._settings.card_lease,
                f"the card of case {case_id}",
            ):
                try:
                    if not case.target_checked:
                        case = await self._enricher.enrich(case)
                    if case.card is None:
                        # Above 1, an earlier post may be in the channel already (its replica died
                        # before saving where it landed): say so on this one rather than stay silent.
                        note = REPOSTED_NOTE if case.posting_claims > 1 else None
                        card = await self._views.shared_card(case, note=note)
                        thread = await self._campaign_thread(case)
                        sending = True
                        if thread is not None:
                            # A campaign member's card, asked for on demand: under the campaign card.
                            ref = posted = await self._messenger.post_card_in_thread(channel, thread, card)
                        else:
                            ref = posted = await self._messenger.post_card(channel, card)
                        fault_point("card.posted")
                        self._metrics.add("remediation_cards_posted_total")
                        log.info("case %s card posted (activity %s)", case.id, ref.activity_id)
                    else:
                        card = await self._views.shared_card(case)
                        ref = case.card
                        await self._messenger.update_card(channel, ref, card)
                        self._metrics.add("remediation_card_updates_total")
                except BaseException as exc:
                    # A post Teams did not take (or never sent) is undone; one whose fate is
                    # unknown (a lost answer, a cancellation mid-flight) counts as maybe posted.
                    unsent = not sending or (
                        isinstance(exc, TeamsError) and not isinstance(exc, TeamsOutcomeUnknown)
                    )
                    await self._store.update_case(
                        case_id, self._lease.release(unsent=unsent and case.card is None)
                    )
                    raise
            self._last_update[case_id] = self._monotonic()
            shown = case.revision

            def mark(current: Case) -> Case | None:
                if posted is not None and current.card is not None and current.card != posted:
                    return None  # a replica that took over saved its own card first: ours is spare
                release = current.publishing_by == self._lease.replica
                return current.model_copy(
                    update={
                        "card": current.card or ref,
                        "published_revision": max(current.published_revision, shown),
                        "posting_claims": 0 if posted is not None else current.posting_claims,
                        "publishing_by": "" if release else current.publishing_by,
                        "publishing_until": None if release else current.publishing_until,
                    }
                )

            case, outcome = await self._store.swap_case(case.id, mark)
            if outcome is None and posted is not None:
                await self._retire_spare_card(case, channel, posted)
            for note in self._escalations.pop(case_id, []):
                if case.card is not None:
                    await self._messenger.reply_in_thread(channel, case.card, note)
        if case.needs_publishing and urgent:
            # The case changed while its card was being sent: send the newer state too.
            return await self.publish(case_id, channel, urgent=True)
        self._forget_if_closed(case)
        return case

    async def _campaign_thread(self, case: Case) -> CardRef | None:
        """Where a campaign member's card goes: the campaign card's thread (``None``: not a member).

        Raises while the campaign card itself is not out yet: the member's card waits for it.
        """
        if not case.campaign_id:
            return None
        campaign = await self._store.get_campaign(case.campaign_id)
        if campaign is None or campaign.card is None:
            raise RemediationError(
                f"case {case.id}: its campaign card is not posted yet; its card waits for it"
            )
        return campaign.card

    async def announce(self, case_id: str, request_id: str, mentions: Sequence[Actor] = ()) -> None:
        """Update the card for everyone and note the request's new state in the thread."""
        channel = await self._store.get_channel()
        if channel is None:
            return
        case = await self.publish(case_id, channel, urgent=True)
        request = await self._store.get_request(request_id)
        if case.card is not None and request is not None:
            text = render_request_note(case, request, now=self._clock())
            await self._messenger.reply_in_thread(channel, case.card, text, mentions)

    @contextlib.asynccontextmanager
    async def _case_lock(self, case_id: str) -> AsyncIterator[None]:
        """Hold the case's lock; the lock is dropped once nobody holds or waits for it."""
        lock = self._case_locks.setdefault(case_id, asyncio.Lock())
        self._lock_users[case_id] = self._lock_users.get(case_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            users = self._lock_users.pop(case_id) - 1
            if users:
                self._lock_users[case_id] = users
            else:
                del self._case_locks[case_id]

    def _defer(self, case_id: str, channel: ChannelRef, wait: float, name: str) -> None:
        if case_id not in self._deferred:
            self._deferred.add(case_id)
            self._tasks.spawn(self._publish_later(case_id, channel, wait), name=name)

    async def _publish_later(self, case_id: str, channel: ChannelRef, wait: float) -> None:
        await self._sleep(wait)
        self._deferred.discard(case_id)
        await self.publish(case_id, channel)

    def _forget_if_closed(self, case: Case) -> None:
        if (case.merged_into or case.status is CaseStatus.CONTAINED) and not case.needs_publishing:
            self._forget(case.id)

    def _forget(self, case_id: str) -> None:
        """Drop what is kept about a closed case (contained, or merged into the person's other
        case) whose card is up to date; an update it is still waiting for keeps it."""
        if case_id not in self._deferred:
            self._last_update.pop(case_id, None)
            self._escalations.pop(case_id, None)

    def _forget_idle(self) -> None:
        """Drop update times older than the coalescing window: they delay nothing any more."""
        now = self._monotonic()
        idle = [k for k, at in self._last_update.items() if now - at >= self._settings.coalesce_seconds]
        for case_id in idle:
            del self._last_update[case_id]

    async def _retire_spare_card(self, case: Case, channel: ChannelRef, spare: CardRef) -> None:
        """A second card of one case (this replica was stopped while another took its post over):
        make it point at the live one instead of leaving a second set of buttons unexplained."""
        log.warning(
            "case %s: a second card was posted (activity %s); marking it out of date",
            case.id,
            spare.activity_id,
        )
        try:
            card = await self._views.shared_card(case, note=SPARE_NOTE)
            await self._messenger.update_card(channel, spare, card)
        except RemediationError as exc:
            log.warning("case %s: the spare card could not be marked: %s", case.id, exc.message)
