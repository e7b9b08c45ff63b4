"""Use cases: what the bot does when an alert arrives, a card is clicked, time passes or a
responder types a command.

The service holds no transport details: Teams is behind :class:`Messenger`, Graph behind
:class:`bot.graph.GraphClient` and :class:`bot.directory.Directory`, state behind
:class:`bot.store.base.Store`. Every decision about a request is made by the pure functions in
:mod:`bot.domain.approval`; every decision, refusal and result lands in the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from bot.actions import Executor
from bot.directory import Directory
from bot.domain.approval import (
    Abort,
    Approve,
    Cancel,
    Event,
    Expire,
    Finish,
    Refused,
    Reject,
    Remind,
    Retry,
    Start,
    decide,
    may_run,
    open_request,
)
from bot.domain.models import (
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    AlertSource,
    CardRef,
    Case,
    CaseStatus,
    ChannelRef,
    IdentityRef,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.domain.plans import blocked, offered_actions, plan
from bot.domain.policy import ActorRoles, Policy
from bot.errors import (
    ConflictError,
    DuplicateError,
    RemediationError,
    StoreError,
    TeamsError,
    TeamsOutcomeUnknown,
)
from bot.faults import fault_point
from bot.graph import GraphClient
from bot.identities import RiskMap, SignalMap, resolve_identity, risk_signal_map, risky_user_map
from bot.metrics import Metrics
from bot.resolver import IdentityResolver, Outcome
from bot.store.base import AlertIntake, Job, Settlement, Store
from cards.audit import with_audit_checkpoint
from cards.case import DEFAULT_LINKS, REASON_INPUT_ID, PortalLinks, Viewer, render_case
from cards.replies import escalation_note, render_alert_comment, render_request_note, render_result_reply

log = logging.getLogger(__name__)

BOT_ACTOR_ID = "remediation-bot"
OPEN_STATES = (RequestState.PENDING, RequestState.APPROVED)
RAN_STATES = (RequestState.EXECUTING, RequestState.SUCCEEDED, RequestState.FAILED)
MAX_REFRESH_USERS = 60
RISKY_SNAPSHOT_TTL = timedelta(minutes=1)
EXECUTE_JOB = "execute"
# Alerts stored per transaction; a push (at most 500 alerts) is one transaction, all or nothing.
RECORD_BATCH = 500
BLAST_RADIUS_WINDOW = timedelta(hours=1)
CLAIM_RETRY_SECONDS = 2.0
# The first line of a result reply sent again because the worker sending it first may have died
# after it went out: a visible duplicate instead of silence.
RESENT_MARKER = "Re-sent after a restart: an earlier copy of this message may be above."
# On a case's card posted again because an earlier post's fate is unknown (its replica died, or
# Teams' answer was lost), and on the spare copy when both landed.
REPOSTED_NOTE = (
    "Posted again after a restart: an earlier copy of this card may be in the channel. "
    "This one is kept up to date."
)
# The first line of a correction: a worker that was stopped (not killed) for longer than its
# lease sent the action after another had read the account back and recorded it as not done.
LATE_NOTE = (
    "Correction: the interrupted run took effect after all (the replica running it was paused, "
    "then sent it). The state read back now is below."
)
SPARE_NOTE = "This copy is out of date: the case's card was posted again and that one is kept up to date."
RISK_SIGNAL_LOOKBACK = timedelta(days=7)
STALE_NOTE = (
    "This card was out of date, so nothing was done. Here is the current state; check it and try again."
)


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


@dataclass(frozen=True)
class Transition:
    """What applying one event to a request did, learnt from the compare-and-swap itself.

    ``request`` is the request as stored afterwards. ``won`` is true when this call's event is
    the one written: whoever must act once on a change (audit it, announce it, run it) acts
    only when it won. Otherwise ``refusal`` says why the event did not apply.
    """

    request: ActionRequest
    won: bool
    refusal: str = ""


@dataclass(frozen=True)
class CardAnswer:
    """What the clicker sees: a card that replaces theirs, or an error with a sentence."""

    card: dict[str, Any] | None = None
    error_status: int = 0
    error_message: str = ""


_VERB_EVENTS = {"approve", "reject", "cancel", "retry"}
_VERB_AUDIT = {
    "approve": "request.approved",
    "reject": "request.rejected",
    "cancel": "request.cancelled",
    "retry": "request.retried",
}


class RemediationService:
    """The bot's behaviour, wired to its ports by :func:`bot.app.create_app`."""

    def __init__(
        self,
        *,
        store: Store,
        graph: GraphClient,
        directory: Directory,
        messenger: Messenger,
        policy: Policy,
        channel_id: str,
        clock: Callable[[], datetime],
        links: PortalLinks = DEFAULT_LINKS,
        invoke_budget: float = 4.0,
        recheck_after: timedelta = timedelta(minutes=2),
        alert_status: str = "",
        coalesce_seconds: float = 3.0,
        job_lease: timedelta = timedelta(minutes=1),
        card_lease: timedelta = timedelta(minutes=1),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self._store = store
        self._graph = graph
        self._directory = directory
        self._messenger = messenger
        self._policy = policy
        self._channel_id = channel_id
        self._clock = clock
        self._links = links
        self._invoke_budget = invoke_budget
        self._executor = Executor(graph, clock, recheck_after=recheck_after)
        self._alert_status = alert_status
        self._risky: tuple[datetime, RiskMap, SignalMap | None] | None = None
        self._coalesce = coalesce_seconds
        self._last_update: dict[str, float] = {}
        self._deferred: set[str] = set()
        self._escalations: dict[str, list[str]] = {}
        self._replica = uuid.uuid4().hex[:8]
        self.metrics = Metrics()
        self._publisher: asyncio.Task[Any] | None = None
        self._publish_again = False
        self._job_lease = job_lease
        self._card_lease = card_lease
        self._new_id = new_id
        self._case_locks: dict[str, asyncio.Lock] = {}
        self._resolver = IdentityResolver(graph, clock)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``work`` in the background; it is awaited at shutdown and its failure logged."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for background work (executions, card updates, replies) to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _audit(
        self,
        kind: str,
        *,
        actor: Actor | None = None,
        case: Case | None = None,
        request: ActionRequest | None = None,
        **payload: Any,
    ) -> None:
        identity = None
        if case is not None:
            identity = (case.identity.upn or case.identity.object_id or "").lower() or None
        await self._store.append_audit(
            at=self._clock(),
            actor_id=actor.object_id if actor else BOT_ACTOR_ID,
            actor_name=actor.label if actor else "remediation-bot",
            kind=kind,
            case_id=case.id if case else (request.case_id if request else None),
            request_id=request.id if request else None,
            identity=identity,
            payload=payload,
        )

    async def _with_checkpoint(self, text: str) -> str:
        """``text`` with the audit trail's head as a checkpoint: published in the thread, outside
        the store, it lets ``audit verify`` notice events later cut off or rewritten."""
        try:
            checkpoint = await self._store.audit_checkpoint(at=self._clock(), short=True)
        except StoreError as exc:
            # The result itself is recorded; a reply without its checkpoint beats no reply.
            log.warning("no audit checkpoint for this reply: %s", exc.message)
            return text
        return with_audit_checkpoint(text, checkpoint)

    # -- the channel --------------------------------------------------------------------------

    async def register_channel(self, channel: ChannelRef, *, actor: Actor | None = None) -> bool:
        """Remember the incident channel when Teams tells us about the configured one.

        Returns whether ``channel`` is the configured channel. Installations elsewhere are
        ignored: cards go only where the admin said. The caller has checked the activity's
        tenant (:class:`bot.teams.handler.TeamsBot` refuses every other tenant first). The first
        registration and every change of service URL are audited, since cards and replies go
        wherever that URL points.
        """
        if channel.channel_id != self._channel_id:
            log.info("ignoring conversation %s: not the configured incident channel", channel.channel_id)
            return False
        known = await self._store.get_channel()
        if known != channel:
            await self._store.set_channel(channel)
            log.info(
                "incident channel %s registered (service url %s)", channel.channel_id, channel.service_url
            )
            if known is None:
                await self._audit(
                    "channel.registered",
                    actor=actor,
                    channel_id=channel.channel_id,
                    service_url=channel.service_url,
                    tenant_id=channel.tenant_id,
                )
            elif known.service_url != channel.service_url:
                log.warning(
                    "incident channel %s: service url changed from %s to %s",
                    channel.channel_id,
                    known.service_url,
                    channel.service_url,
                )
                await self._audit(
                    "channel.service_url_changed",
                    actor=actor,
                    channel_id=channel.channel_id,
                    previous_service_url=known.service_url,
                    service_url=channel.service_url,
                    tenant_id=channel.tenant_id,
                )
        return True

    async def refuse_activity(self, reason: str, **details: str) -> None:
        """An activity refused before any use case ran (another tenant, or none): log and audit.

        One warning line and one ``activity.refused_tenant`` audit event naming who it claimed to
        be from. The actor id is qualified by the claimed tenant, so a foreign user whose object
        id happens to equal one of ours is never recorded as that person. If the audit cannot be
        written the activity stays refused.
        """
        log.warning(
            "refused %s activity %s from tenant %r (object id %r): %s",
            details.get("activity_type"),
            details.get("activity_id"),
            details.get("tenant"),
            details.get("object_id"),
            reason,
        )
        self.metrics.add("remediation_refusals_total")
        claimed = f"{details.get('tenant') or 'no tenant'}/{details.get('object_id') or 'unknown'}"
        actor = Actor(object_id=claimed, name=details.get("name") or "")
        try:
            await self._audit("activity.refused_tenant", actor=actor, reason=reason, activity=dict(details))
        except RemediationError as exc:
            log.error("the refusal of activity %s could not be audited: %s", details.get("activity_id"), exc)

    # -- intake -------------------------------------------------------------------------------

    async def ingest(self, alerts: Sequence[Alert], *, publish: bool = True) -> int:
        """Record alerts into cases (one per person) and bring every card up to date.

        Every alert's target is first resolved to its Entra object id (see
        :class:`bot.resolver.IdentityResolver`), so a person named by object id in one alert and
        by UPN (in any letter case) in another has one case. A name that cannot be resolved yet
        opens a case that offers no action until :meth:`settle_unresolved` resolves it.

        Alerts are stored in transactions of up to :data:`RECORD_BATCH` (a push, at most that
        many, is stored all or nothing). Returns how many alerts were new or changed; repeats
        of known alerts change nothing. An alert that raises a case's severity or brings a new
        source gets a thread note.
        """
        resolved = await self._resolver.resolve_alerts(alerts)
        changed = 0
        for start in range(0, len(resolved), RECORD_BATCH):
            batch = resolved[start : start + RECORD_BATCH]
            intakes = await self._store.record_alerts(batch, new_case_id=self._new_id, now=self._clock())
            for alert, intake in zip(batch, intakes, strict=True):
                changed += await self._noted(alert, intake)
        if changed and publish:
            await self.publish_cards()
        return changed

    async def _noted(self, alert: Alert, intake: AlertIntake) -> bool:
        """Count, log and audit what recording ``alert`` did; queue its escalation note."""
        if intake.settled is not None:
            await self._audit_settlement(intake.settled)
        if intake.alert_changed:
            self.metrics.add("remediation_alerts_ingested_total", source=alert.source.value)
        if intake.case_created:
            log.info("case %s opened for %s", intake.case.id, intake.case.identity.label)
            await self._audit(
                "case.opened",
                case=intake.case,
                alert_id=alert.id,
                title=alert.title,
                resolved=intake.case.resolved,
            )
            return intake.alert_changed
        if intake.alert_new:
            await self._audit("alert.added", case=intake.case, alert_id=alert.id, title=alert.title)
        if intake.alert_changed and intake.case.card is not None:
            # Only a card the channel has seen can escalate; a new card shows it all anyway.
            escalation = escalation_note(intake.case, alert)
            if escalation:
                self._escalations.setdefault(intake.case.id, []).append(escalation)
        return intake.alert_changed

    async def settle_unresolved(self) -> int:
        """Try again to resolve every open case still waiting for its person's Entra object id.

        A resolved case is keyed on the object id from then on (its card then offers actions),
        or merged into the person's case if they have one: never two open cases for one person.
        Returns how many were settled; their cards are brought up to date.
        """
        settled = 0
        for case in await self._store.list_cases():
            if case.resolved or case.merged_into:
                continue
            resolution = await self._resolver.resolve(case.identity)
            if not resolution.resolved:
                continue
            try:
                settlement = await self._store.rekey_case(case.id, resolution.identity, now=self._clock())
            except RemediationError as exc:
                log.error("case %s: could not be keyed on its object id yet: %s", case.id, exc.message)
                continue
            if settlement is not None:
                await self._audit_settlement(settlement)
                settled += 1
        if settled:
            await self.publish_cards()
        return settled

    async def _audit_settlement(self, settlement: Settlement) -> None:
        closed = settlement.closed
        if closed is None:
            case = settlement.case
            log.info("case %s resolved to Entra object id %s", case.id, case.identity.object_id)
            await self._audit("case.resolved", case=case, object_id=case.identity.object_id)
            return
        log.info("case %s merged into case %s (one case per person)", closed.id, settlement.case.id)
        await self._audit(
            "case.merged", case=closed, merged_into=settlement.case.id, reason=closed.closed_reason
        )

    def schedule_publish(self) -> None:
        """Bring every card up to date in the background, one pass at a time.

        A push storm asks for this once per request: requests that arrive during a pass only
        mark it to run once more, so there is never more than one pass (and one list of every
        case in memory) at a time.
        """
        if self._publisher is not None and not self._publisher.done():
            self._publish_again = True
            return
        self._publisher = self.spawn(self._publish_passes(), name="publisher")

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
                self._channel_id,
            )
            return
        for case in await self._store.list_cases():
            if case.needs_publishing:
                try:
                    await self._publish(case.id, channel)
                except RemediationError as exc:
                    # This card is retried at the next publish; the others must not wait on it.
                    log.error("case %s: card could not be sent: %s", case.id, exc.message)

    async def _publish(self, case_id: str, channel: ChannelRef, *, urgent: bool = False) -> Case:
        """Post the case's card, or update it; alert-driven updates of one card are coalesced.

        ``urgent`` (a responder's click, an action's result) updates at once; an alert storm
        updates each card at most once per coalescing window, with the latest state.
        """
        # One publisher per case at a time keeps posts and updates in order and posts once.
        async with self._case_locks.setdefault(case_id, asyncio.Lock()):
            case = await self._require_case(case_id)
            if not case.needs_publishing:
                return case
            if case.card is not None and not urgent:
                wait = self._coalesce - (time.monotonic() - self._last_update.get(case_id, -math.inf))
                if wait > 0:
                    if case_id not in self._deferred:
                        self._deferred.add(case_id)
                        self.spawn(self._publish_later(case_id, channel, wait), name=f"coalesce-{case_id}")
                    return case
            claimed = await self._claim_publishing(case_id)
            if claimed is None:
                # Another replica is sending this card and may have rendered an older state:
                # look again shortly, so the newest state reaches the channel too.
                if case_id not in self._deferred:
                    self._deferred.add(case_id)
                    self.spawn(
                        self._publish_later(case_id, channel, CLAIM_RETRY_SECONDS), name=f"reclaim-{case_id}"
                    )
                return case
            case = claimed
            posted: CardRef | None = None
            sending = False
            # The lease is renewed while Teams' retries run (they can outlast any fixed lease),
            # so another replica takes the card over only when this one is dead or stopped.
            async with self._renewing(
                partial(self._renew_publishing, case_id), self._card_lease, f"the card of case {case_id}"
            ):
                try:
                    if not case.target_checked:
                        case = await self._enrich(case)
                    if case.card is None:
                        # Above 1, an earlier post may be in the channel already (its replica died
                        # before saving where it landed): say so on this one rather than stay silent.
                        note = REPOSTED_NOTE if case.posting_claims > 1 else None
                        card = await self._shared_card(case, note=note)
                        sending = True
                        ref = posted = await self._messenger.post_card(channel, card)
                        fault_point("card.posted")
                        self.metrics.add("remediation_cards_posted_total")
                        log.info("case %s card posted (activity %s)", case.id, ref.activity_id)
                    else:
                        card = await self._shared_card(case)
                        ref = case.card
                        await self._messenger.update_card(channel, ref, card)
                        self.metrics.add("remediation_card_updates_total")
                except BaseException as exc:
                    # A post Teams did not take (or never sent) is undone; one whose fate is
                    # unknown (a lost answer, a cancellation mid-flight) counts as maybe posted.
                    unsent = not sending or (
                        isinstance(exc, TeamsError) and not isinstance(exc, TeamsOutcomeUnknown)
                    )
                    await self._store.update_case(
                        case_id, self._release_claim(unsent=unsent and case.card is None)
                    )
                    raise
            self._last_update[case_id] = time.monotonic()
            shown = case.revision

            def mark(current: Case) -> Case | None:
                if posted is not None and current.card is not None and current.card != posted:
                    return None  # a replica that took over saved its own card first: ours is spare
                release = current.publishing_by == self._replica
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
            return await self._publish(case_id, channel, urgent=True)
        return case

    async def _retire_spare_card(self, case: Case, channel: ChannelRef, spare: CardRef) -> None:
        """A second card of one case (this replica was stopped while another took its post over):
        make it point at the live one instead of leaving a second set of buttons unexplained."""
        log.warning(
            "case %s: a second card was posted (activity %s); marking it out of date",
            case.id,
            spare.activity_id,
        )
        try:
            await self._messenger.update_card(channel, spare, await self._shared_card(case, note=SPARE_NOTE))
        except RemediationError as exc:
            log.warning("case %s: the spare card could not be marked: %s", case.id, exc.message)

    async def _claim_publishing(self, case_id: str) -> Case | None:
        """Take the case's publishing lease (compare-and-swap), so replicas never post one card
        twice or send its updates out of order. ``None`` while another replica holds it.

        Claiming a case that has no card records the intent to post (``posting_claims``) in the
        same write, before anything is sent: whoever claims it next knows a post may have landed.
        """
        now = self._clock()

        def claim(current: Case) -> Case | None:
            held = current.publishing_until is not None and current.publishing_until > now
            if held and current.publishing_by != self._replica:
                return None
            claims = current.posting_claims + 1 if current.card is None else current.posting_claims
            return current.model_copy(
                update={
                    "publishing_by": self._replica,
                    "publishing_until": now + self._card_lease,
                    "posting_claims": claims,
                }
            )

        _, claimed = await self._store.swap_case(case_id, claim)
        return claimed

    async def _renew_publishing(self, case_id: str) -> bool:
        now = self._clock()

        def renew(current: Case) -> Case | None:
            if current.publishing_by != self._replica:
                return None  # lost: another replica took the card over
            return current.model_copy(update={"publishing_until": now + self._card_lease})

        _, renewed = await self._store.swap_case(case_id, renew)
        return renewed is not None

    def _release_claim(self, *, unsent: bool) -> Callable[[Case], Case | None]:
        """Give the lease back; ``unsent`` also withdraws the intent to post (nothing reached Teams)."""

        def release(current: Case) -> Case | None:
            if current.publishing_by != self._replica:
                return None  # taken over meanwhile: the lease is not ours to give back
            claims = max(current.posting_claims - 1, 0) if unsent else current.posting_claims
            return current.model_copy(
                update={"publishing_by": "", "publishing_until": None, "posting_claims": claims}
            )

        return release

    @contextlib.asynccontextmanager
    async def _renewing(
        self, renew: Callable[[], Awaitable[bool]], lease: timedelta, what: str
    ) -> AsyncIterator[None]:
        """Renew a lease every third of its length while the block runs.

        A replica that stops renewing (dead, or stopped long enough) loses the lease and another
        takes the work over; this one learns it at its next compare-and-swap, which then fails.
        """

        async def beat() -> None:
            while True:
                await asyncio.sleep(lease.total_seconds() / 3)
                try:
                    if not await renew():
                        log.warning("lost the lease on %s: another replica took it over", what)
                        return
                except RemediationError as exc:
                    log.warning("could not renew the lease on %s: %s", what, exc.message)

        task = asyncio.create_task(beat(), name=f"renew {what}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _publish_later(self, case_id: str, channel: ChannelRef, wait: float) -> None:
        await asyncio.sleep(wait)
        self._deferred.discard(case_id)
        await self._publish(case_id, channel)

    async def _enrich(self, case: Case) -> Case:
        """Learn what the card must show before it is first posted: who the identity is in each
        system, whether it is enabled, at risk, protected or privileged."""
        if not case.resolved:
            # Nothing can be read reliably by a name Entra ID does not resolve; once it does,
            # the case is re-keyed and read then (see settle_unresolved).
            return case
        risky, signals = await self._risk_snapshot()
        identity, account, facts = await resolve_identity(
            self._graph, case.identity, now=self._clock, risky=risky, signals=signals
        )
        target = await self._directory.target_facts(identity)

        def learn(latest: Case) -> Case:
            return latest.model_copy(
                update={
                    "identity": latest.identity.merged(identity),
                    "target_checked": True,
                    "protected": target.protected,
                    "privileged_reason": target.privileged_reason if target.privileged else "",
                    "account": account if latest.account.checked_at is None else latest.account,
                    "facts": facts,
                }
            )

        return await self._store.update_case(case.id, learn)

    async def _risk_snapshot(self) -> tuple[RiskMap | None, SignalMap | None]:
        # One read of risky users and one of recent detections serve every card posted within
        # a minute: Identity Protection allows one request per second tenant-wide.
        now = self._clock()
        if self._risky is None or now - self._risky[0] > RISKY_SNAPSHOT_TTL:
            risky = await risky_user_map(self._graph)
            signals = await risk_signal_map(self._graph, now - RISK_SIGNAL_LOOKBACK)
            if risky is None:
                return None, signals
            self._risky = (now, risky, signals)
        return self._risky[1], self._risky[2]

    async def _shared_card(self, case: Case, *, note: str | None = None) -> dict[str, Any]:
        request = await self._latest_request(case.id)
        return render_case(
            case, request, links=self._links, note=note, refresh_user_ids=self._refresh_ids(request)
        )

    def _refresh_ids(self, request: ActionRequest | None) -> list[str]:
        if request is None or request.state not in OPEN_STATES:
            return []
        people = [request.requester, *request.approvals]
        ids = [p.teams_id for p in people if p.teams_id]
        return list(dict.fromkeys(ids))[:MAX_REFRESH_USERS]

    # -- clicks -------------------------------------------------------------------------------

    async def handle_card_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> CardAnswer:
        """A person clicked a button on a case card.

        Only ids and the card revision are read from the card's data (plus the reason the
        person typed); the target, the action and who may do what come from server state.
        """
        request: ActionRequest | None = None
        request_id = data.get("requestId")
        if isinstance(request_id, str) and request_id:
            request = await self._store.get_request(request_id)
            if request is None:
                return CardAnswer(
                    error_status=404, error_message="That request does not exist; nothing was done."
                )
            case_id: Any = request.case_id
        else:
            case_id = data.get("caseId")
        if not isinstance(case_id, str) or not case_id:
            return CardAnswer(
                error_status=400, error_message="The card's data names no case; nothing was done."
            )
        case = await self._store.get_case(case_id)
        if case is None:
            return CardAnswer(
                error_status=404, error_message=f"Case {case_id} does not exist; nothing was done."
            )
        if verb == "refresh":
            return CardAnswer(card=await self._card_for(case, actor, personal=True))
        if verb in _VERB_EVENTS:
            if request is None:
                return await self._refuse(
                    case, actor, f"The {verb} button must name a request; nothing was done."
                )
            if verb in ("approve", "retry") and blocked(case):
                # Nothing runs from a case merged into the person's other case (or unresolved).
                return await self._refuse(case, actor, blocked(case), request)
            if data.get("cardVersion") != case.revision:
                return CardAnswer(card=await self._card_for(case, actor, note=STALE_NOTE))
            return await self._decide_click(case, request, actor, verb, data)
        try:
            action = ResponseAction(verb)
        except ValueError:
            return await self._refuse(case, actor, f"Unknown action “{verb}”; nothing was done.")
        if data.get("cardVersion") != case.revision:
            return CardAnswer(card=await self._card_for(case, actor, note=STALE_NOTE))
        return await self._request_action(case, action, actor, data)

    async def _refuse(
        self, case: Case, actor: Actor, reason: str, request: ActionRequest | None = None
    ) -> CardAnswer:
        log.info("case %s: refused %s: %s", case.id, actor.object_id, reason)
        self.metrics.add("remediation_refusals_total")
        await self._audit("request.refused", actor=actor, case=case, request=request, reason=reason)
        return CardAnswer(card=await self._card_for(case, actor, note=reason))

    async def _card_for(
        self, case: Case, actor: Actor, *, note: str | None = None, personal: bool = False
    ) -> dict[str, Any]:
        """The card answering ``actor``'s click.

        A click is answered with the shared card (plus ``note``): the same card the channel gets
        by update, so whichever reaches the client last shows the same buttons. Only a
        ``refresh`` (Teams' per-user view for the requester and approvers) gets ``personal``
        buttons.
        """
        request = await self._latest_request(case.id)
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
        )

    async def _request_action(
        self, case: Case, action: ResponseAction, actor: Actor, data: Mapping[str, Any]
    ) -> CardAnswer:
        why_not = blocked(case)
        if why_not:
            return await self._refuse(case, actor, why_not)
        routed = plan(action, case)
        if isinstance(routed, Refused):
            return await self._refuse(case, actor, routed.reason)
        if action not in offered_actions(case) and not case.protected:
            return await self._refuse(
                case,
                actor,
                f"{action.label} does not apply to {case.identity.label} right now; nothing was done.",
            )
        reason = data.get(REASON_INPUT_ID)
        roles = await self._directory.roles_of(actor.object_id)
        target = await self._directory.target_facts(case.identity)
        outcome = open_request(
            case,
            action,
            actor,
            roles,
            reason if isinstance(reason, str) else "",
            self._policy,
            self._clock(),
            target=target,
            destructive_last_hour=await self._destructive_last_hour(action),
            request_id=self._new_id(),
        )
        if isinstance(outcome, Refused):
            return await self._refuse(case, actor, outcome.reason)
        try:
            request = await self._store.add_request(outcome)
        except DuplicateError:
            return await self._refuse(
                case, actor, "Another request for this case is already in progress; nothing more was done."
            )
        log.info(
            "case %s: request %s (%s) by %s: %s",
            case.id,
            request.id,
            action.value,
            actor.object_id,
            request.state,
        )
        self.metrics.add("remediation_requests_total", action=action.value)
        await self._audit(
            "request.opened",
            actor=actor,
            case=case,
            request=request,
            action=action.value,
            reason=request.reason,
            required_approvals=request.required_approvals,
            signed_off=[a.object_id for a in request.approvals],
            privileged_reason=request.privileged_reason,
        )
        return await self._after_change(case, request, actor)

    async def _decide_click(
        self, case: Case, request: ActionRequest, actor: Actor, verb: str, data: Mapping[str, Any]
    ) -> CardAnswer:
        roles = await self._directory.roles_of(actor.object_id)
        note = data.get(REASON_INPUT_ID)
        event: Event
        if verb == "approve":
            event = Approve(actor, roles)
        elif verb == "reject":
            event = Reject(actor, roles, note if isinstance(note, str) else "")
        elif verb == "retry":
            event = Retry(actor, roles)
        else:
            event = Cancel(actor)
        try:
            moved = await self.transition(request.id, event)
        except DuplicateError:
            return await self._refuse(
                case, actor, "Another request for this case is in progress; finish or cancel it first."
            )
        if not moved.won:
            return await self._refuse(case, actor, moved.refusal, moved.request)
        updated = moved.request
        await self._audit(
            _VERB_AUDIT[verb],
            actor=actor,
            case=case,
            request=updated,
            state=updated.state.value,
            note=updated.decision_note,
        )
        return await self._after_change(case, updated, actor)

    async def _after_change(self, case: Case, request: ActionRequest, actor: Actor) -> CardAnswer:
        """Bump the card, tell the thread, and run the action if it just became approved."""
        await self._store.update_case(case.id, lambda c: c.revised())
        if request.state is RequestState.APPROVED:
            # Executions go through the store's job queue, so exactly one replica runs each one
            # and a replica that dies mid-run leaves it to another (see run_jobs).
            await self._store.enqueue_job(EXECUTE_JOB, request.idempotency_key, {"requestId": request.id})
            task = self.spawn(self.run_jobs(), name=f"jobs-after-{request.id}")
            await asyncio.wait({task}, timeout=self._invoke_budget)
        else:
            self.spawn(self._announce(case.id, request.id), name=f"announce-{request.id}")
        case = await self._require_case(case.id)
        return CardAnswer(card=await self._card_for(case, actor))

    async def _announce(self, case_id: str, request_id: str, mentions: Sequence[Actor] = ()) -> None:
        """Update the card for everyone and note the request's new state in the thread."""
        channel = await self._store.get_channel()
        if channel is None:
            return
        case = await self._publish(case_id, channel, urgent=True)
        request = await self._store.get_request(request_id)
        if case.card is not None and request is not None:
            text = render_request_note(case, request, now=self._clock())
            await self._messenger.reply_in_thread(channel, case.card, text, mentions)

    # -- execution ----------------------------------------------------------------------------

    async def transition(self, request_id: str, event: Event) -> Transition:
        """Apply ``event`` to the request inside the store's compare-and-swap; say who won.

        The decision is made on the stored value at the moment of the write, never on a read
        made before it: of two replicas handling the same click, sweep or job, exactly one
        gets ``won`` and goes on to audit, announce or run what follows. A :class:`Start` is
        counted against the blast radius and claimed in one store transaction, so the limit
        holds however many replicas start requests at once.
        """
        now = self._clock()

        def apply(current: ActionRequest) -> ActionRequest | Refused:
            return decide(current, event, self._policy, now)

        def start(current: ActionRequest, started_last_hour: int) -> ActionRequest | Refused:
            assert isinstance(event, Start)
            counted = replace(event, destructive_last_hour=started_last_hour)
            return decide(current, counted, self._policy, now)

        if isinstance(event, Start):
            stored, outcome = await self._store.start_request(
                request_id, start, counted=self._policy.destructive_actions, since=now - BLAST_RADIUS_WINDOW
            )
        else:
            stored, outcome = await self._store.swap_request(request_id, apply)
        if isinstance(outcome, Refused):
            return Transition(stored, won=False, refusal=outcome.reason)
        return Transition(stored, won=True)

    async def _destructive_last_hour(self, action: ResponseAction) -> int:
        """Destructive actions started in the past hour: the early check when a request is asked
        for (the binding one is made when it starts, in :meth:`transition`)."""
        if action not in self._policy.destructive_actions:
            return 0
        since = self._clock() - BLAST_RADIUS_WINDOW
        ran = await self._store.list_requests_in(RAN_STATES)
        return sum(
            1
            for r in ran
            if r.action in self._policy.destructive_actions
            and r.started_at is not None
            and r.started_at >= since
        )

    async def run_jobs(self) -> int:
        """Claim queued executions and run them until none is left; returns how many ran.

        Every replica calls this (after a click, and every few seconds); the store hands each
        job to one worker at a time. The worker renews its lease while it works, so a job is
        claimed again only when its worker died or was stopped for longer than the lease.

        Each claim is a worker of its own (the replica's id and a fresh suffix): a replica runs
        several of these loops at once, and the one that claims a job again after a pause must
        not share the claim with the paused one that held it before, or both would carry on.
        """
        ran = 0
        while True:
            worker = f"{self._replica}.{uuid.uuid4().hex[:6]}"
            job = await self._store.claim_job(EXECUTE_JOB, worker, self._job_lease)
            if job is None:
                return ran
            try:
                async with self._renewing(
                    partial(self._holds, job), self._job_lease, f"execution job {job.key}"
                ):
                    await self._execute(job)
                if not await self._carried_through(job):
                    # Never finish a job whose request is still to run or to report (this worker
                    # lost the job meanwhile): once the lease lapses the next claim carries it on.
                    log.warning(
                        "execution job %s: its request is not finished; left to the next claim", job.key
                    )
                    continue
                await self._store.finish_job(job.key, job.worker)
            except ConflictError:
                log.warning("execution job %s was taken over by another worker", job.key)
                continue
            except Exception:
                # Left unfinished on purpose: once the lease lapses another attempt resumes it.
                log.exception("execution job %s failed; it will be resumed", job.key)
                continue
            ran += 1

    async def _carried_through(self, job: Job) -> bool:
        """Nothing is left for ``job``: its request ended and was reported (or is gone, or has a
        newer attempt with a job of its own)."""
        request = await self._store.get_request(str(job.payload.get("requestId", "")))
        if request is None or request.idempotency_key != job.key:
            return True
        if request.state in (RequestState.APPROVED, RequestState.EXECUTING):
            return False
        ended = request.state in (RequestState.SUCCEEDED, RequestState.FAILED)
        return not ended or request.reported_attempt >= request.attempt

    async def _holds(self, job: Job) -> bool:
        """Renew this worker's claim on ``job``; ``False`` once another worker has taken it over."""
        return await self._store.renew_job(job.key, job.worker, self._job_lease)

    async def _execute(self, job: Job) -> None:
        """Carry one execution job on from wherever its request stands.

        - *approved*: start it (blast radius counted and the request claimed in one store
          transaction), send the action once, verify, record the result, report it;
        - *executing*: the worker that started it died or was stopped (its lease lapsed): take
          it over. An attempt never dispatched is run; a dispatched one is read back and never
          sent again;
        - *succeeded* / *failed*: the result is stored; report it if the thread was not told.
        """
        request = await self._store.get_request(str(job.payload.get("requestId", "")))
        if request is None or request.idempotency_key != job.key:
            return  # gone, or a job of an earlier attempt (a retry queued the next one)
        if request.state is RequestState.APPROVED:
            await self._start(request, job)
        elif request.state is RequestState.EXECUTING:
            await self._take_over(request, job)
        elif request.state in (RequestState.SUCCEEDED, RequestState.FAILED):
            await self._report(request)

    async def _current_approvers(self, request: ActionRequest) -> frozenset[str]:
        """The request's sign-offs who are approvers right now (object ids, lower-case)."""
        current: set[str] = set()
        for signer in request.approvals:
            if (await self._directory.roles_of(signer.object_id)).approver:
                current.add(signer.object_id.lower())
        return frozenset(current)

    async def _start(self, request: ActionRequest, job: Job) -> None:
        start = Start(current_approvers=await self._current_approvers(request))
        fault_point("action.claimed")
        started = await self.transition(request.id, start)
        case = await self._require_case(request.case_id)
        if not started.won:
            latest = started.request
            if latest.state is RequestState.APPROVED:
                # Approved but not allowed to run any more: say so and close the request as failed.
                await self._fail_unstarted(case, latest, started.refusal)
            elif latest.idempotency_key != job.key:
                pass  # an earlier attempt's job
            elif latest.state is RequestState.EXECUTING and await self._holds(job):
                # Started after this worker read it as approved, by one that had lost this job
                # (stopped past its lease): that one sends nothing now, so this one, holding the
                # job, carries it on. Finishing the job here would leave it executing for ever.
                await self._take_over(latest, job)
            elif latest.state in (RequestState.SUCCEEDED, RequestState.FAILED):
                await self._report(latest)
            return
        await self._audit(
            "action.started",
            case=case,
            request=started.request,
            idempotency_key=started.request.idempotency_key,
            attempt=started.request.attempt,
        )
        fault_point("action.started")
        await self._run(case, started.request, job)

    async def _take_over(self, request: ActionRequest, job: Job) -> None:
        """Finish an attempt whose worker stopped: run it if it was never sent, else read back."""
        case = await self._require_case(request.case_id)
        log.warning(
            "request %s: its worker stopped before finishing (job claimed %d times); taking it over",
            request.id,
            job.attempts,
        )
        await self._audit(
            "action.taken_over",
            case=case,
            request=request,
            attempt=request.attempt,
            dispatched=request.dispatched,
        )
        if request.dispatched:
            await self._resume(case, request)
            return
        # Nothing was sent: it may run now if it still may (expiry and approvers checked again).
        refused = may_run(request, await self._current_approvers(request), self._clock())
        if refused is not None:
            not_run = ActionResult(succeeded=False, summary=f"Not run: {refused.reason}")
            await self._finish(case, request, not_run, "action.failed")
            return
        await self._run(case, request, job)

    async def _run(self, case: Case, request: ActionRequest, job: Job) -> None:
        """Send the attempt's action (at most once across every worker), verify, record, report."""
        steps = plan(request.action, case)
        if isinstance(steps, Refused):
            result = ActionResult(succeeded=False, summary=steps.reason)
        elif not await self._holds(job):
            log.warning(
                "request %s: this worker lost its job before sending; the new holder runs it", request.id
            )
            return
        elif await self._dispatch(request):
            fault_point("action.dispatched")
            result = await self._executor.run(request.action, case, steps)
            fault_point("graph.answered")
        else:
            # Another worker dispatched this attempt first (one that had lost this job and woke
            # up): it is never sent twice. Read it back, unless that worker finished it already.
            latest = await self._store.get_request(request.id)
            if (
                latest is not None
                and latest.state is RequestState.EXECUTING
                and latest.attempt == request.attempt
            ):
                await self._resume(case, latest)
            return
        await self._finish(case, request, result, "action.succeeded" if result.succeeded else "action.failed")

    async def _dispatch(self, request: ActionRequest) -> bool:
        """Mark the attempt dispatched just before its first Graph call; ``False`` if it was already.

        The mark is the fence between a worker and one taking its job over: of the two, only the
        one whose mark is written sends anything. A taker that finds the mark reads back instead.
        """

        def mark(latest: ActionRequest) -> ActionRequest | None:
            if (
                latest.state is not RequestState.EXECUTING
                or latest.attempt != request.attempt
                or latest.dispatched
            ):
                return None
            return latest.model_copy(update={"dispatched": True})

        _, marked = await self._store.swap_request(request.id, mark)
        return marked is not None

    async def _resume(self, case: Case, request: ActionRequest) -> None:
        """Finish a dispatched attempt by reading the state back; nothing is sent again."""
        steps = plan(request.action, case)
        if isinstance(steps, Refused):
            result = ActionResult(succeeded=False, summary=steps.reason)
        else:
            started = request.started_at or self._clock()
            result = await self._executor.resume(request.action, case, steps, started)
        log.warning("request %s resumed after an interruption: %s", request.id, result.summary)
        await self._finish(case, request, result, "action.resumed")

    async def _finish(self, case: Case, request: ActionRequest, result: ActionResult, kind: str) -> None:
        """Record the attempt's result (once: the first worker to record it wins) and report it."""
        finished = await self.transition(request.id, Finish(result))
        if not finished.won:
            # This worker was taken over while it ran, and the new one recorded a result first.
            log.warning(
                "request %s: a late result was not recorded (%s): %s",
                request.id,
                finished.refusal,
                result.summary,
            )
            await self._audit(
                "action.late_result",
                case=case,
                request=finished.request,
                attempt=request.attempt,
                summary=result.summary,
                verified_state=result.verified_state,
            )
            stored = finished.request.result
            if result.succeeded and stored is not None and not stored.succeeded:
                # The other worker read back before this one's call landed and recorded that it did
                # not take effect: correct the card and the thread rather than leave them wrong.
                late = finished.request.model_copy(update={"result": result})
                await self._after_result(case.id, late, first=False, prefix=LATE_NOTE)
            return
        request = finished.request
        log.info("request %s %s: %s", request.id, request.state.value, result.summary)
        self.metrics.add(
            "remediation_actions_total",
            action=request.action.value,
            outcome="succeeded" if result.succeeded else "failed",
        )
        await self._audit(
            kind,
            case=case,
            request=request,
            attempt=request.attempt,
            summary=result.summary,
            verified=result.verified,
            verified_state=result.verified_state,
            graph_request_id=result.graph_request_id,
            correlation_ids=result.correlation_ids,
            steps=[step.model_dump(mode="json") for step in result.steps],
        )
        await self._report(request)

    async def _report(self, request: ActionRequest) -> None:
        """Tell the thread how the attempt ended: at least once, a re-send marked as such.

        Claiming the report (compare-and-swap) counts the tries; it is recorded as reported only
        after the reply went out. A worker that dies in between leaves it unrecorded, and the
        next worker on the job sends it again with a "re-sent after a restart" line: a visible
        duplicate rather than silence.
        """

        def claim(latest: ActionRequest) -> ActionRequest | None:
            if (
                latest.attempt != request.attempt
                or latest.reported_attempt >= latest.attempt
                or latest.state not in (RequestState.SUCCEEDED, RequestState.FAILED)
            ):
                return None
            return latest.model_copy(update={"report_claims": latest.report_claims + 1})

        _, claimed = await self._store.swap_request(request.id, claim)
        if claimed is None:
            return  # reported already
        fault_point("report.claimed")
        resent = RESENT_MARKER if claimed.report_claims > 1 else ""
        await self._after_result(claimed.case_id, claimed, first=True, prefix=resent)

        def reported(latest: ActionRequest) -> ActionRequest | None:
            if latest.reported_attempt >= claimed.attempt:
                return None
            return latest.model_copy(update={"reported_attempt": claimed.attempt})

        await self._store.update_request(request.id, reported)

    async def _after_result(
        self, case_id: str, request: ActionRequest, *, first: bool, prefix: str = ""
    ) -> None:
        """Refresh what the card shows, reply in the thread and comment on the case's alerts.

        ``prefix`` is a first line for the reply (a re-send, a correction). Raises when there is
        nowhere to reply yet (no channel, no card), so the report is not recorded as sent and is
        tried again.
        """
        ran = request.started_at is not None
        identity, account, facts = await resolve_identity(
            self._graph, (await self._require_case(case_id)).identity, now=self._clock
        )
        result = request.result

        def record(latest: Case) -> Case:
            changes: dict[str, Any] = {"facts": facts, "identity": latest.identity.merged(identity)}
            if account.checked_at is not None:
                changes["account"] = account
            if result is not None and result.succeeded:
                if request.action is ResponseAction.DISABLE_ACCOUNT:
                    changes["status"] = CaseStatus.CONTAINED
                elif request.action is ResponseAction.ENABLE_ACCOUNT:
                    changes["status"] = CaseStatus.OPEN
            return latest.revised(**changes)

        case = await self._store.update_case(case_id, record)
        channel = await self._store.get_channel()
        if channel is None:
            raise RemediationError(
                f"request {request.id}: the incident channel is not known yet; reported later"
            )
        case = await self._publish(case.id, channel, urgent=True)
        if case.card is None:
            raise RemediationError(f"request {request.id}: case {case.id} has no card yet; reported later")
        if ran:
            text = render_result_reply(case, request, links=self._links, update=not first)
            text = await self._with_checkpoint(text)
        else:
            text = render_request_note(case, request, now=self._clock())
        if prefix:
            text = f"{prefix}\n\n{text}"
        await self._messenger.reply_in_thread(channel, case.card, text)
        fault_point("report.sent")
        if ran and (first or (result is not None and not result.pending_verification)):
            await self._write_back(case, request)

    async def _write_back(self, case: Case, request: ActionRequest) -> None:
        """Comment on each alert of the case, and set its status when configured to."""
        comment = render_alert_comment(case, request)
        for alert in case.alerts:
            if alert.source in (AlertSource.MANUAL, AlertSource.PUSHED):
                continue  # opened from chat or pushed in the minimal form: not an alert in Graph
            try:
                await self._graph.add_alert_comment(alert.id, comment)
                if self._alert_status and request.result is not None and request.result.succeeded:
                    await self._graph.update_alert(alert.id, status=self._alert_status)
            except RemediationError as exc:
                # The action itself stands; a missing comment is worth a log line, not a failure.
                log.warning("case %s: could not comment on alert %s: %s", case.id, alert.id, exc.message)

    async def _fail_unstarted(self, case: Case, request: ActionRequest, reason: str) -> None:
        """Close an approved request that may not run any more, and say why in the thread."""
        aborted = await self.transition(request.id, Abort(reason))
        if not aborted.won:
            return
        log.info("request %s not started: %s", request.id, reason)
        await self._audit("request.refused", case=case, request=aborted.request, reason=reason)
        # Closing it frees the case for a new request (one active request per case).
        await self._store.update_case(case.id, lambda c: c.revised())
        await self._report(aborted.request)

    # -- time passing -------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Expire overdue requests, remind approvers of waiting ones, re-verify pending results,
        send cards left behind by a replica that died, and try again to resolve cases still
        waiting for their person's Entra object id.

        Every replica sweeps; each note is decided inside the compare-and-swap that records it,
        so two sweeping replicas write one audit event and one thread note between them.
        """
        try:
            await self.settle_unresolved()
        except RemediationError as exc:
            log.error("cases waiting for an object id are retried at the next sweep: %s", exc.message)
        now = self._clock()
        for request in await self._store.list_requests_in((RequestState.SUCCEEDED, RequestState.FAILED)):
            result = request.result
            if result is not None and result.recheck_at is not None and result.recheck_at <= now:
                await self._sweep_one(request, self._recheck(request.id))
        for request in await self._store.list_requests_in(OPEN_STATES):
            if now >= request.expires_at:
                await self._sweep_one(request, self._expire(request.id))
            elif self._needs_reminder(request, now):
                await self._sweep_one(request, self._remind(request.id))
            elif request.state is RequestState.APPROVED:
                # Approved but its job was never queued (a crash right after the approval):
                # queueing is idempotent by key, so this is a no-op for a queued one.
                await self._sweep_one(
                    request,
                    self._store.enqueue_job(EXECUTE_JOB, request.idempotency_key, {"requestId": request.id}),
                )
        # Cards a dead replica left unsent (recorded alerts, a lapsed posting lease): publishing
        # is otherwise driven by new alerts and clicks, which may never come for that case.
        if await self._store.get_channel() is not None:
            await self.publish_cards()

    async def _sweep_one(self, request: ActionRequest, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except RemediationError as exc:
            log.error(
                "request %s: time-based work failed, retried at the next sweep: %s", request.id, exc.message
            )

    async def _recheck(self, request_id: str) -> None:
        """Read back what was pending verification, record it and tell the thread."""
        request = await self._store.get_request(request_id)
        if request is None or request.result is None or request.result.recheck_at is None:
            return
        case = await self._require_case(request.case_id)
        steps = plan(request.action, case)
        if isinstance(steps, Refused):
            return
        rechecked = await self._executor.recheck(request.action, case, steps, request.result)
        previous = request.result

        def refine(latest: ActionRequest) -> ActionRequest | None:
            # Verification refines the result of a finished request; it is not a state change.
            if latest.result != previous:
                return None
            return latest.model_copy(update={"result": rechecked})

        _, refined = await self._store.swap_request(request_id, refine)
        if refined is None:
            return  # another replica re-checked it first and told the thread
        await self._audit(
            "action.verified" if rechecked.verified else "action.verification_failed",
            case=case,
            request=refined,
            summary=rechecked.summary,
            verified_state=rechecked.verified_state,
        )
        await self._after_result(case.id, refined, first=False)

    def _needs_reminder(self, request: ActionRequest, now: datetime) -> bool:
        wait = self._policy.reminder_after
        return (
            wait is not None
            and request.state is RequestState.PENDING
            and request.reminded_at is None
            and now - request.created_at >= wait
        )

    async def _expire(self, request_id: str) -> None:
        expired = await self.transition(request_id, Expire())
        if not expired.won:
            return  # not due, decided otherwise, or another replica expired it and said so
        request = expired.request
        case = await self._require_case(request.case_id)
        log.info("request %s expired", request.id)
        await self._audit("request.expired", case=case, request=request)
        await self._store.update_case(case.id, lambda c: c.revised())
        await self._announce(case.id, request.id)

    async def _remind(self, request_id: str) -> None:
        reminded = await self.transition(request_id, Remind())
        if not reminded.won:
            return  # not due, or another replica reminded the approvers already
        request = reminded.request
        case = await self._require_case(request.case_id)
        await self._audit("request.reminded", case=case, request=request)
        mentions = await self._directory.named_approvers()
        await self._announce(
            case.id, request.id, [m for m in mentions if not m.same_person(request.requester)]
        )

    # -- chat ---------------------------------------------------------------------------------

    async def contain(self, actor: Actor, upn: str) -> str:
        """``contain <upn>``: a responder opens a case by hand for any user; returns the reply."""
        roles = await self._directory.roles_of(actor.object_id)
        if not roles.responder:
            return f"{actor.label} is not an authorized responder, so no case was opened."
        resolution = await self._resolver.resolve(IdentityRef(upn=upn))
        if resolution.outcome is Outcome.NOT_FOUND:
            return f"Entra ID has no user {upn}; no case was opened."
        if not resolution.resolved:
            return f"Could not look up {upn}: {resolution.detail}"
        target = resolution.identity
        now = self._clock()
        alert = Alert(
            id=f"manual:{target.object_id}:{int(now.timestamp())}",
            source=AlertSource.MANUAL,
            title=f"Opened from chat by {actor.label}",
            severity=Severity.HIGH,
            status="new",
            created_at=now,
            updated_at=now,
            detection_source="manual",
            target=target,
        )
        [intake] = await self._store.record_alerts([alert], new_case_id=self._new_id, now=now)
        if intake.settled is not None:
            await self._audit_settlement(intake.settled)
        await self._audit("case.contain_command", actor=actor, case=intake.case, upn=upn)
        if intake.case_created:
            await self._audit(
                "case.opened", actor=actor, case=intake.case, alert_id=alert.id, title=alert.title
            )
        await self.publish_cards()
        label = intake.case.identity.label
        if intake.case_created:
            return f"Opened a case for {label}: its card is in the incident channel."
        return f"{label} already has an open case; its card in the incident channel now notes your request."

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

    async def channel(self) -> ChannelRef | None:
        """The incident channel, if known."""
        return await self._store.get_channel()

    # -- reads --------------------------------------------------------------------------------

    async def _require_case(self, case_id: str) -> Case:
        case = await self._store.get_case(case_id)
        if case is None:
            raise StoreError(f"case {case_id} vanished")
        return case

    async def _latest_request(self, case_id: str) -> ActionRequest | None:
        requests = await self._store.list_requests(case_id)
        return requests[-1] if requests else None
