"""Storm mode in the channel: the campaign card, its clicks and its bulk requests.

Owns :class:`CampaignDesk`:

- publishing each campaign's one card (the publishing lease of :class:`CardLease`, updates
  coalesced per card like case cards, members' facts read before they are shown);
- a person's paging, answered with the page for them only (the shared card never changes);
- "Show card": a member's own card, posted on demand in the campaign card's thread;
- bulk requests: the target set frozen and hashed when asked for, protected accounts left out
  and listed, two distinct approvers always, the blast radius counted with the whole set;
  approve, reject, cancel and "Retry failed" through the single-action approval rules, every
  decision written by compare-and-swap (whoever wins it audits and announces it).

Execution of an approved bulk request is :class:`bot.services.bulk.BulkExecution`'s.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from bot.domain.approval import Approve, Cancel, Event, Expire, Refused, Reject, decide
from bot.domain.authn import TEAMS_CLICK, Authentication
from bot.domain.campaigns import (
    BulkRequest,
    Campaign,
    bulk_opening_step_up,
    bulk_sign_off_step_up,
    open_bulk,
    scope_cases,
)
from bot.domain.models import Actor, Case, ChannelRef, RequestState, ResponseAction
from bot.domain.plans import blocked
from bot.domain.policy import StepUp
from bot.errors import RemediationError, TeamsError, TeamsOutcomeUnknown
from bot.services.audit_log import AuditLog
from bot.services.card_lease import CardLease
from bot.services.clicks import step_up_refusal
from bot.services.enrichment import Enricher
from bot.services.ports import CardAnswer, Ports, ServiceSettings
from bot.services.publishing import Publisher
from bot.services.tasks import TaskSupervisor, renewing
from bot.services.transitions import Transitions
from bot.web.metrics import Metrics
from cards.campaign import (
    BULK_ACTION_INPUT,
    BULK_SCOPE_INPUT,
    REASON_INPUT_ID,
    note_input_id,
    render_campaign,
)
from cards.case import request_headline
from cards.text import inert

log = logging.getLogger(__name__)

BULK_JOB = "bulk"
CAMPAIGN_VERBS = frozenset(
    {"campaignPage", "showCard", "bulkRequest", "bulkApprove", "bulkReject", "bulkCancel", "bulkRetry"}
)
# Members whose facts (protected, privileged, on-premises) are read per publishing pass, and
# how many reads run at once: the card fills in as a storm grows without holding it back.
ENRICH_PER_PASS = 50
ENRICH_CONCURRENCY = 4
_BULK_AUDIT = {"bulkApprove": "bulk.approved", "bulkReject": "bulk.rejected", "bulkCancel": "bulk.cancelled"}


class CampaignDesk:
    """The campaign cards and everything clicked on them."""

    def __init__(
        self,
        ports: Ports,
        settings: ServiceSettings,
        *,
        audit: AuditLog,
        publisher: Publisher,
        enricher: Enricher,
        transitions: Transitions,
        tasks: TaskSupervisor,
        metrics: Metrics,
        replica: str,
    ) -> None:
        self._store = ports.store
        self._directory = ports.directory
        self._messenger = ports.messenger
        self._policy = ports.policy
        self._clock = ports.clock
        self._new_id = ports.new_id
        self._monotonic = ports.monotonic
        self._sleep = ports.sleep
        self._settings = settings
        self._audit = audit
        self._publisher = publisher
        self._enricher = enricher
        self._transitions = transitions
        self._tasks = tasks
        self._metrics = metrics
        self._lease: CardLease[Campaign] = CardLease(
            ports.store.swap_campaign, ports.clock, settings.card_lease, replica
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_update: dict[str, float] = {}
        self._deferred: set[str] = set()
        self._reading: set[str] = set()
        self.on_approved: Any = None  # set by the service: runs bulk jobs after an approval

    # -- the card in the channel ------------------------------------------------------------

    async def publish_campaigns(self) -> None:
        """Post or update every campaign card that is behind."""
        channel = await self._store.get_channel()
        if channel is None:
            return
        for campaign in await self._store.list_campaigns_needing_publishing():
            try:
                await self.publish(campaign.id, channel)
            except RemediationError as exc:
                log.error("campaign %s: card could not be sent: %s", campaign.id, exc.message)

    async def publish(
        self, campaign_id: str, channel: ChannelRef, *, urgent: bool = False
    ) -> Campaign | None:
        """Post the campaign card, or update it; updates are coalesced unless ``urgent``."""
        lock = self._locks.setdefault(campaign_id, asyncio.Lock())
        async with lock:
            campaign = await self._store.get_campaign(campaign_id)
            if campaign is None or not campaign.needs_publishing:
                return campaign
            if campaign.card is not None and not urgent:
                wait = self._settings.coalesce_seconds - (
                    self._monotonic() - self._last_update.get(campaign_id, -math.inf)
                )
                if wait > 0:
                    self._defer(campaign_id, channel, wait)
                    return campaign
            claimed = await self._lease.claim(campaign_id)
            if claimed is None:
                self._defer(campaign_id, channel, 2.0)
                return campaign
            campaign = claimed
            sending = False
            async with renewing(
                lambda: self._lease.renew(campaign_id),
                self._settings.card_lease,
                f"campaign card {campaign_id}",
            ):
                try:
                    members = await self._store.list_campaign_cases(campaign_id)
                    bulks = await self._store.list_bulks(campaign_id)
                    # In a worker thread: a storm's card takes a while, and Graph batches go on.
                    card = await asyncio.to_thread(
                        partial(
                            render_campaign,
                            campaign,
                            members,
                            bulks,
                            self._policy,
                            page_url=self._settings.approval_page_url,
                        )
                    )
                    if campaign.card is None:
                        sending = True
                        ref = await self._messenger.post_card(channel, card)
                        self._metrics.add("remediation_cards_posted_total")
                        log.info("campaign %s card posted (activity %s)", campaign_id, ref.activity_id)
                    else:
                        ref = campaign.card
                        await self._messenger.update_card(channel, ref, card)
                        self._metrics.add("remediation_card_updates_total")
                except BaseException as exc:
                    unsent = not sending or (
                        isinstance(exc, TeamsError) and not isinstance(exc, TeamsOutcomeUnknown)
                    )
                    await self._store.swap_campaign(
                        campaign_id, self._lease.release(unsent=unsent and campaign.card is None)
                    )
                    raise
            self._last_update[campaign_id] = self._monotonic()
            shown = campaign.revision

            def mark(current: Campaign) -> Campaign | None:
                release = current.publishing_by == self._lease.replica
                return current.model_copy(
                    update={
                        "card": current.card or ref,
                        "published_revision": max(current.published_revision, shown),
                        "posting_claims": 0,
                        "publishing_by": "" if release else current.publishing_by,
                        "publishing_until": None if release else current.publishing_until,
                    }
                )

            campaign, _ = await self._store.swap_campaign(campaign_id, mark)
            if any(not case.target_checked and case.resolved for case in members):
                self._read_facts_later(campaign_id)
        if campaign.needs_publishing and urgent:
            return await self.publish(campaign_id, channel, urgent=True)
        return campaign

    def _defer(self, campaign_id: str, channel: ChannelRef, wait: float) -> None:
        if campaign_id in self._deferred:
            return
        self._deferred.add(campaign_id)

        async def later() -> None:
            await self._sleep(wait)
            self._deferred.discard(campaign_id)
            await self.publish(campaign_id, channel)

        self._tasks.spawn(later(), name=f"campaign-coalesce-{campaign_id}")

    def _read_facts_later(self, campaign_id: str) -> None:
        """Read members' facts in the background, after the card is out (the card never waits
        for them); the card is updated once they are read."""
        if campaign_id in self._reading:
            return
        self._reading.add(campaign_id)

        async def read() -> None:
            # Pass after pass until every member is read (or a pass reads none: the next
            # publishing tries again). The card is updated after each pass, coalesced; its
            # own call to read more finds this task still reading, so the loop goes on here.
            try:
                while True:
                    members = await self._store.list_campaign_cases(campaign_id)
                    if not await self._enrich_some(members):
                        break
                    await self.touch(campaign_id, urgent=False)
            finally:
                self._reading.discard(campaign_id)

        self._tasks.spawn(read(), name=f"campaign-facts-{campaign_id}")

    async def _enrich_some(self, members: list[Case]) -> int:
        """Read the facts of up to :data:`ENRICH_PER_PASS` members not read yet (protected,
        privileged, on-premises): the card marks them, and bulk requests route by them.
        Returns how many were read."""
        unread = [case for case in members if not case.target_checked and case.resolved][:ENRICH_PER_PASS]
        if not unread:
            return 0
        gate = asyncio.Semaphore(ENRICH_CONCURRENCY)

        async def enrich(case: Case) -> Case:
            async with gate:
                try:
                    return await self._enricher.enrich(case)
                except RemediationError as exc:
                    log.warning("case %s: facts could not be read yet: %s", case.id, exc.message)
                    return case

        read = await asyncio.gather(*(enrich(c) for c in unread))
        return sum(1 for case in read if case.target_checked)

    async def touch(self, campaign_id: str, *, urgent: bool) -> None:
        """The campaign changed (a bulk request, progress): bump its card and send it."""
        await self._store.swap_campaign(campaign_id, lambda c: c.revised())
        channel = await self._store.get_channel()
        if channel is not None:
            await self.publish(campaign_id, channel, urgent=urgent)

    def touch_later(self, campaign_id: str) -> None:
        """:meth:`touch` (urgent) in the background: the caller goes on without waiting for the
        card to be rendered and sent (a bulk action's first chunk goes out meanwhile)."""
        self._tasks.spawn(self.touch(campaign_id, urgent=True), name=f"campaign-touch-{campaign_id}")

    async def say(self, campaign_id: str, text: str) -> None:
        """Reply ``text`` (the bot's own markdown, untrusted values already inert) in the thread."""
        channel = await self._store.get_channel()
        campaign = await self._store.get_campaign(campaign_id)
        if channel is None or campaign is None or campaign.card is None:
            log.warning("campaign %s: no card to reply under yet: %s", campaign_id, text[:80])
            return
        await self._messenger.reply_in_thread(channel, campaign.card, text)

    async def view(self, campaign: Campaign, *, page: int = 0, note: str | None = None) -> dict[str, Any]:
        """The campaign card at ``page`` with ``note``: what one person's click is answered with."""
        members = await self._store.list_campaign_cases(campaign.id)
        bulks = await self._store.list_bulks(campaign.id)
        return await asyncio.to_thread(
            partial(
                render_campaign,
                campaign,
                members,
                bulks,
                self._policy,
                page=page,
                note=note,
                page_url=self._settings.approval_page_url,
            )
        )

    # -- clicks -----------------------------------------------------------------------------

    async def handle(
        self, actor: Actor, verb: str, data: Mapping[str, Any], *, via: Authentication = TEAMS_CLICK
    ) -> CardAnswer:
        """A click on a campaign card (or its twin on the approval page). Only ids, a page, a
        scope key and the chosen action are read from the card's data; targets and authorization
        come from server state. ``via`` is how the person was authenticated: sign-offs the
        policy's ``step_up`` covers count only with a fresh sign-in holding its context."""
        bulk: BulkRequest | None = None
        bulk_id = data.get("bulkId")
        if isinstance(bulk_id, str) and bulk_id:
            bulk = await self._store.get_bulk(bulk_id)
            if bulk is None:
                return CardAnswer(
                    error_status=404, error_message="That bulk request does not exist; nothing was done."
                )
            campaign_id: Any = bulk.campaign_id
        else:
            campaign_id = data.get("campaignId")
        if not isinstance(campaign_id, str) or not campaign_id:
            return CardAnswer(
                error_status=400, error_message="The card's data names no campaign; nothing was done."
            )
        campaign = await self._store.get_campaign(campaign_id)
        if campaign is None:
            return CardAnswer(
                error_status=404, error_message=f"Campaign {campaign_id} does not exist; nothing was done."
            )
        if verb == "campaignPage":
            page = data.get("page")
            if isinstance(page, bool) or not isinstance(page, int) or page < 0:
                return CardAnswer(
                    error_status=400, error_message="The card asked for no valid page; nothing was done."
                )
            # The page is this person's view: the answer replaces the card for them only.
            return CardAnswer(card=await self.view(campaign, page=page))
        if verb == "showCard":
            return await self._show_card(campaign, actor, data.get("caseId"))
        if verb == "bulkRequest":
            return await self._request_bulk(campaign, actor, data, via)
        if bulk is None:
            return await self._refuse(
                campaign, actor, f"The {verb} button must name a bulk request; nothing was done.", via=via
            )
        if verb == "bulkRetry":
            return await self._retry_failed(campaign, bulk, actor, data, via)
        return await self._decide(campaign, bulk, actor, verb, data, via)

    async def _refuse(
        self,
        campaign: Campaign,
        actor: Actor,
        reason: str,
        bulk: BulkRequest | None = None,
        *,
        via: Authentication = TEAMS_CLICK,
        step_up: StepUp | None = None,
    ) -> CardAnswer:
        log.info("campaign %s: refused %s: %s", campaign.id, actor.object_id, reason)
        self._metrics.add("remediation_refusals_total")
        wanted: dict[str, Any] = {"step_up_context": step_up.context} if step_up else {}
        await self._audit.write(
            "bulk.refused",
            actor=actor,
            campaign_id=campaign.id,
            bulk_id=bulk.id if bulk else None,
            reason=reason,
            authentication=via.audit(),
            **wanted,
        )
        return CardAnswer(card=await self.view(campaign, note=reason), refusal=reason, step_up=step_up)

    def _step_up_refusal(self, step_up: StepUp, via: Authentication) -> str:
        return step_up_refusal(
            step_up, via, page=bool(self._settings.approval_page_url), where="this bulk request"
        )

    async def _show_card(self, campaign: Campaign, actor: Actor, case_id: Any) -> CardAnswer:
        roles = await self._directory.roles_of(actor.object_id)
        if not (roles.responder or roles.approver):
            return await self._refuse(
                campaign, actor, f"{actor.label} is not a responder or approver, so no card was posted."
            )
        case = await self._store.get_case(case_id) if isinstance(case_id, str) and case_id else None
        if case is None or case.campaign_id != campaign.id:
            return await self._refuse(
                campaign, actor, "That identity is not in this campaign; nothing was done."
            )
        note = await self.show_card(case, actor)
        return CardAnswer(card=await self.view(campaign, note=note))

    async def show_card(self, case: Case, actor: Actor) -> str:
        """Post ``case``'s own card in its campaign card's thread (once); returns what to tell the person."""

        def ask(current: Case) -> Case | None:
            if current.card is not None or current.card_requested:
                return None
            return current.revised(card_requested=True)

        case, asked = await self._store.swap_case(case.id, ask)
        if asked is None:
            return f"The card of {case.identity.label} is in the campaign card's thread already."
        await self._audit.write("campaign.card_shown", actor=actor, case=case, campaign_id=case.campaign_id)
        channel = await self._store.get_channel()
        if channel is not None:
            self._tasks.spawn(self._publisher.publish(case.id, channel, urgent=True), name=f"show-{case.id}")
        return f"The card of {case.identity.label} is being posted in this campaign card's thread."

    async def _candidates(self, cases: Sequence[Case]) -> list[tuple[Case, bool, str]]:
        """Each case with whether it is protected and why it is privileged, read now where the
        card has not read it yet (a failed read counts as privileged: fail closed)."""
        gate = asyncio.Semaphore(ENRICH_CONCURRENCY)

        async def facts(case: Case) -> tuple[Case, bool, str]:
            protected = case.protected or self._policy.is_protected(case.identity)
            if case.target_checked:
                return case, protected, case.privileged_reason
            async with gate:
                target = await self._directory.target_facts(case.identity)
            reason = target.privileged_reason if target.privileged else ""
            return case, protected or target.protected, reason

        return list(await asyncio.gather(*(facts(case) for case in cases)))

    async def _request_bulk(
        self, campaign: Campaign, actor: Actor, data: Mapping[str, Any], via: Authentication
    ) -> CardAnswer:
        scope = data.get(BULK_SCOPE_INPUT)
        verb = data.get(BULK_ACTION_INPUT)
        try:
            action = ResponseAction(verb) if isinstance(verb, str) else None
        except ValueError:
            action = None
        if action is None:
            return await self._refuse(campaign, actor, f"Unknown action “{verb}”; nothing was done.", via=via)
        members = await self._store.list_campaign_cases(campaign.id)
        scoped = scope_cases(scope, members) if isinstance(scope, str) else None
        if scoped is None:
            return await self._refuse(
                campaign,
                actor,
                "That group is not on the campaign card any more; choose again. Nothing was done.",
                via=via,
            )
        label, cases = scoped
        reason = data.get(REASON_INPUT_ID)
        return await self._open(
            campaign,
            actor,
            action,
            str(scope),
            label,
            cases,
            reason if isinstance(reason, str) else "",
            retry_of="",
            via=via,
        )

    async def _open(
        self,
        campaign: Campaign,
        actor: Actor,
        action: ResponseAction,
        scope: str,
        label: str,
        cases: Sequence[Case],
        reason: str,
        *,
        retry_of: str,
        via: Authentication,
    ) -> CardAnswer:
        roles = await self._directory.roles_of(actor.object_id)
        if not roles.responder:
            # Decided before any target is read: someone outside the responders learns nothing.
            cases = []
        outcome = open_bulk(
            campaign,
            bulk_id=self._new_id(),
            scope=scope,
            scope_label=label,
            action=action,
            actor=actor,
            roles=roles,
            reason=reason,
            candidates=await self._candidates([c for c in cases if not blocked(c)]),
            policy=self._policy,
            now=self._clock(),
            started_last_hour=await self._transitions.destructive_last_hour(action),
            retry_of=retry_of,
        )
        if isinstance(outcome, Refused):
            return await self._refuse(campaign, actor, outcome.reason, via=via)
        step_up = bulk_opening_step_up(self._policy, outcome)
        if step_up is not None and not via.satisfies(step_up, self._clock()):
            return await self._refuse(
                campaign, actor, self._step_up_refusal(step_up, via), via=via, step_up=step_up
            )
        bulk = await self._store.add_bulk(outcome)
        self._metrics.add("remediation_requests_total", action=f"bulk.{action.value}")
        log.info(
            "campaign %s: bulk request %s (%s, %d targets) by %s",
            campaign.id,
            bulk.id,
            action.value,
            len(bulk.targets),
            actor.object_id,
        )
        await self._audit.write(
            "bulk.requested",
            actor=actor,
            campaign_id=campaign.id,
            bulk_id=bulk.id,
            action=action.value,
            scope=bulk.scope,
            scope_label=bulk.scope_label,
            reason=bulk.approval.reason,
            targets=[{"case_id": t.case_id, "object_id": t.object_id, "upn": t.upn} for t in bulk.targets],
            target_hash=bulk.target_hash,
            protected_left_out=list(bulk.protected),
            privileged=[t.object_id for t in bulk.privileged],
            required_approvals=bulk.approval.required_approvals,
            signed_off=[a.object_id for a in bulk.approval.approvals],
            started_last_hour=bulk.started_last_hour,
            over_blast_radius=bulk.over_blast_radius,
            retry_of=retry_of,
            authentication=via.audit(),
        )
        await self._after_change(campaign, bulk, actor)
        return CardAnswer(card=await self.view(campaign))

    async def _retry_failed(
        self,
        campaign: Campaign,
        bulk: BulkRequest,
        actor: Actor,
        data: Mapping[str, Any],
        via: Authentication,
    ) -> CardAnswer:
        if bulk.state not in (RequestState.SUCCEEDED, RequestState.FAILED) or not bulk.failed_targets:
            return await self._refuse(
                campaign, actor, "This bulk request has no failed identities to retry.", bulk, via=via
            )
        wanted = {t.case_id for t in bulk.failed_targets}
        cases = [c for c in await self._store.list_campaign_cases(campaign.id) if c.id in wanted]
        reason = data.get(note_input_id(bulk.id)) or data.get(REASON_INPUT_ID) or bulk.approval.reason
        return await self._open(
            campaign,
            actor,
            bulk.action,
            bulk.scope,
            f"the failed identities of {bulk.scope_label}",
            cases,
            reason if isinstance(reason, str) else "",
            retry_of=bulk.id,
            via=via,
        )

    async def _decide(
        self,
        campaign: Campaign,
        bulk: BulkRequest,
        actor: Actor,
        verb: str,
        data: Mapping[str, Any],
        via: Authentication,
    ) -> CardAnswer:
        roles = await self._directory.roles_of(actor.object_id)
        note = data.get(note_input_id(bulk.id))
        event: Event
        if verb == "bulkApprove":
            event = Approve(actor, roles)
        elif verb == "bulkReject":
            event = Reject(actor, roles, note if isinstance(note, str) else "")
        elif verb == "bulkCancel":
            event = Cancel(actor)
        else:
            return await self._refuse(
                campaign, actor, f"Unknown action “{verb}”; nothing was done.", bulk, via=via
            )
        step_up = bulk_sign_off_step_up(self._policy, bulk, event, self._clock())
        if step_up is not None and not via.satisfies(step_up, self._clock()):
            # The sign-off that lets a bulk action run needs the fresh sign-in, as a single
            # action's does: a Teams click never proves it.
            return await self._refuse(
                campaign, actor, self._step_up_refusal(step_up, via), bulk, via=via, step_up=step_up
            )
        moved, refusal = await self.apply(bulk.id, event)
        if refusal:
            return await self._refuse(campaign, actor, refusal, moved, via=via)
        await self._audit.write(
            _BULK_AUDIT[verb],
            actor=actor,
            campaign_id=campaign.id,
            bulk_id=moved.id,
            state=moved.state.value,
            note=moved.approval.decision_note,
            target_hash=moved.target_hash,
            authentication=via.audit(),
        )
        await self._after_change(campaign, moved, actor)
        return CardAnswer(card=await self.view(campaign))

    async def apply(self, bulk_id: str, event: Event) -> tuple[BulkRequest, str]:
        """Apply ``event`` to the bulk request's approval inside the compare-and-swap; the stored
        request and, when the event did not apply, the refusal ("" when this call won)."""
        now = self._clock()

        def apply(current: BulkRequest) -> BulkRequest | Refused:
            outcome = decide(current.approval, event, self._policy, now)
            if isinstance(outcome, Refused):
                return outcome
            return current.model_copy(update={"approval": outcome})

        stored, outcome = await self._store.swap_bulk(bulk_id, apply)
        if isinstance(outcome, Refused):
            return stored, outcome.reason
        return stored, ""

    async def _after_change(self, campaign: Campaign, bulk: BulkRequest, actor: Actor) -> None:
        """Bump the campaign card, note the change in its thread, queue an approved request."""
        if bulk.state is RequestState.APPROVED:
            await self._store.enqueue_job(BULK_JOB, bulk.approval.idempotency_key, {"bulkId": bulk.id})
            if self.on_approved is not None:
                self._tasks.spawn(self.on_approved(), name=f"bulk-after-{bulk.id}")
        self._tasks.spawn(self._announce(campaign.id, bulk.id), name=f"announce-bulk-{bulk.id}")

    async def _announce(self, campaign_id: str, bulk_id: str) -> None:
        await self.touch(campaign_id, urgent=True)
        bulk = await self._store.get_bulk(bulk_id)
        if bulk is not None:
            await self.say(campaign_id, bulk_note(bulk))

    # -- the sweep --------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Expire bulk requests nobody decided in time (the first replica to write it announces it)."""
        for bulk in await self._store.list_bulks_in((RequestState.PENDING, RequestState.APPROVED)):
            if self._clock() < bulk.approval.expires_at:
                continue
            moved, refusal = await self.apply(bulk.id, Expire())
            if refusal:
                continue
            await self._audit.write("bulk.expired", campaign_id=moved.campaign_id, bulk_id=moved.id)
            await self._announce(moved.campaign_id, moved.id)


def bulk_note(bulk: BulkRequest) -> str:
    """The thread note for a bulk request's new state (markdown; untrusted values inert)."""
    approval = bulk.approval
    head = f"**Bulk: {inert(request_headline(approval), 200)}** — {len(bulk.targets)} identities in " + inert(
        bulk.scope_label, 200
    )
    lines = [
        head,
        f"Requested by {inert(approval.requester.label, 120)}; sign-offs {len(approval.approvals)} of "
        f"{approval.required_approvals}; target set SHA-256 {bulk.target_hash[:16]}.",
    ]
    if bulk.protected:
        lines.append(f"Left out (protected): {len(bulk.protected)}.")
    return "\n\n".join(lines)
