"""Use cases: what the bot does when an alert arrives, a card is clicked, time passes or a
responder types a command.

The service holds no transport details: Teams is behind :class:`Messenger`, Graph behind
:class:`bot.graph.GraphClient` and :class:`bot.directory.Directory`, state behind
:class:`bot.store.base.Store`. Every decision about a request is made by the pure functions in
:mod:`bot.domain.approval`; every decision, refusal and result lands in the audit trail.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot import actions
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
    Start,
    decide,
    open_request,
)
from bot.domain.models import (
    AccountState,
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    CardRef,
    Case,
    CaseStatus,
    ChannelRef,
    RequestState,
    ResponseAction,
)
from bot.domain.policy import ActorRoles, Policy
from bot.errors import DuplicateError, RemediationError, StoreError
from bot.graph import GraphClient
from bot.store.base import Store
from cards.case import DEFAULT_LINKS, REASON_INPUT_ID, PortalLinks, Viewer, render_case
from cards.replies import render_request_note, render_result_reply

log = logging.getLogger(__name__)

BOT_ACTOR_ID = "remediation-bot"
OPEN_STATES = (RequestState.PENDING, RequestState.APPROVED)
RAN_STATES = (RequestState.EXECUTING, RequestState.SUCCEEDED, RequestState.FAILED)
MAX_REFRESH_USERS = 60
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
class CardAnswer:
    """What the clicker sees: a card that replaces theirs, or an error with a sentence."""

    card: dict[str, Any] | None = None
    error_status: int = 0
    error_message: str = ""


_VERB_EVENTS = {"approve", "reject", "cancel"}


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
        self._new_id = new_id
        self._case_locks: dict[str, asyncio.Lock] = {}
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

    # -- the channel --------------------------------------------------------------------------

    async def register_channel(self, channel: ChannelRef) -> bool:
        """Remember the incident channel when Teams tells us about the configured one.

        Returns whether ``channel`` is the configured channel. Installations elsewhere are
        ignored: cards go only where the admin said.
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
        return True

    # -- intake -------------------------------------------------------------------------------

    async def ingest(self, alerts: Sequence[Alert]) -> int:
        """Record alerts into cases (one per identity), bring every card up to date.

        Returns how many alerts were new or changed; repeats of known alerts change nothing.
        """
        changed = 0
        for alert in alerts:
            intake = await self._store.record_alert(alert, new_case_id=self._new_id(), now=self._clock())
            changed += intake.alert_changed
            if intake.case_created:
                log.info("case %s opened for %s", intake.case.id, intake.case.identity.label)
                await self._audit("case.opened", case=intake.case, alert_id=alert.id, title=alert.title)
            elif intake.alert_new:
                await self._audit("alert.added", case=intake.case, alert_id=alert.id, title=alert.title)
        if changed:
            await self.publish_cards()
        return changed

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
                await self._publish(case.id, channel)

    async def _publish(self, case_id: str, channel: ChannelRef) -> Case:
        # One publisher per case at a time keeps posts and updates in order and posts once.
        async with self._case_locks.setdefault(case_id, asyncio.Lock()):
            case = await self._require_case(case_id)
            if not case.needs_publishing:
                return case
            if not case.target_checked:
                case = await self._enrich(case)
            card = await self._shared_card(case)
            if case.card is None:
                ref = await self._messenger.post_card(channel, card)
                log.info("case %s card posted (activity %s)", case.id, ref.activity_id)
            else:
                ref = case.card
                await self._messenger.update_card(channel, ref, card)
            shown = case.revision

            def mark(current: Case) -> Case:
                return current.model_copy(
                    update={"card": ref, "published_revision": max(current.published_revision, shown)}
                )

            return await self._store.update_case(case.id, mark)

    async def _enrich(self, case: Case) -> Case:
        """Learn what the card must show before it is first posted: protected, privileged, enabled."""
        facts = await self._directory.target_facts(case.identity)
        account = case.account
        user_id = case.identity.object_id or case.identity.upn
        if user_id:
            try:
                user = await self._graph.get_user(user_id, select=["id", "accountEnabled"])
                enabled = user.get("accountEnabled")
                if isinstance(enabled, bool):
                    account = AccountState(enabled=enabled, checked_at=self._clock())
            except RemediationError as exc:
                log.warning("case %s: could not read the account state: %s", case.id, exc.message)

        def learn(latest: Case) -> Case:
            return latest.model_copy(
                update={
                    "target_checked": True,
                    "protected": facts.protected,
                    "privileged_reason": facts.privileged_reason if facts.privileged else "",
                    "account": account if latest.account.checked_at is None else latest.account,
                }
            )

        return await self._store.update_case(case.id, learn)

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
            return CardAnswer(card=await self._card_for(case, actor))
        if verb in _VERB_EVENTS:
            if request is None:
                return await self._refuse(
                    case, actor, f"The {verb} button must name a request; nothing was done."
                )
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
        await self._audit("request.refused", actor=actor, case=case, request=request, reason=reason)
        return CardAnswer(card=await self._card_for(case, actor, note=reason))

    async def _card_for(self, case: Case, actor: Actor, *, note: str | None = None) -> dict[str, Any]:
        """The card as ``actor`` should see it (their own buttons; everyone's state)."""
        request = await self._latest_request(case.id)
        roles = await self._directory.roles_of(actor.object_id)
        viewer = Viewer(
            actor=actor,
            responder=roles.responder,
            approver=roles.approver,
        )
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
        else:
            event = Cancel(actor)
        refusal: list[str] = []

        def apply(current: ActionRequest) -> ActionRequest | None:
            outcome = decide(current, event, self._policy, self._clock())
            if isinstance(outcome, Refused):
                refusal[:] = [outcome.reason]
                return None
            refusal.clear()
            return outcome

        updated = await self._store.update_request(request.id, apply)
        if refusal:
            return await self._refuse(case, actor, refusal[0], updated)
        kind = {"approve": "request.approved", "reject": "request.rejected", "cancel": "request.cancelled"}[
            verb
        ]
        await self._audit(
            kind,
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
            task = self.spawn(self._execute(request.id), name=f"execute-{request.id}")
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
        case = await self._publish(case_id, channel)
        request = await self._store.get_request(request_id)
        if case.card is not None and request is not None:
            text = render_request_note(case, request, now=self._clock())
            await self._messenger.reply_in_thread(channel, case.card, text, mentions)

    # -- execution ----------------------------------------------------------------------------

    async def _destructive_last_hour(self, action: ResponseAction, exclude: str | None = None) -> int:
        if action not in self._policy.destructive_actions:
            return 0
        since = self._clock() - timedelta(hours=1)
        ran = await self._store.list_requests_in(RAN_STATES)
        return sum(
            1
            for r in ran
            if r.id != exclude
            and r.action in self._policy.destructive_actions
            and r.started_at is not None
            and r.started_at >= since
        )

    async def _execute(self, request_id: str) -> None:
        """Claim an approved request, run it once, verify, record, update the card, reply."""
        request = await self._store.get_request(request_id)
        if request is None:
            return
        current: set[str] = set()
        for signer in request.approvals:
            if (await self._directory.roles_of(signer.object_id)).approver:
                current.add(signer.object_id.lower())
        start = Start(
            current_approvers=frozenset(current),
            destructive_last_hour=await self._destructive_last_hour(request.action, exclude=request.id),
        )
        refusal: list[str] = []

        def claim(latest: ActionRequest) -> ActionRequest | None:
            outcome = decide(latest, start, self._policy, self._clock())
            if isinstance(outcome, Refused):
                refusal[:] = [outcome.reason]
                return None
            refusal.clear()
            return outcome

        request = await self._store.update_request(request_id, claim)
        case = await self._require_case(request.case_id)
        if refusal:
            # Approved but not allowed to run any more: say so and close the request as failed.
            log.info("request %s not started: %s", request_id, refusal[0])
            if request.state is RequestState.APPROVED:
                await self._audit("request.refused", case=case, request=request, reason=refusal[0])
                await self._fail_unstarted(request, refusal[0])
                self.spawn(self._announce(case.id, request.id), name=f"announce-{request.id}")
            return
        await self._audit(
            "action.started", case=case, request=request, idempotency_key=request.idempotency_key
        )
        result = await self._run_action(request, case)

        def finish(latest: ActionRequest) -> ActionRequest | None:
            outcome = decide(latest, Finish(result), self._policy, self._clock())
            return None if isinstance(outcome, Refused) else outcome

        request = await self._store.update_request(request_id, finish)
        log.info("request %s %s: %s", request.id, request.state.value, result.summary)
        await self._audit(
            "action.succeeded" if result.succeeded else "action.failed",
            case=case,
            request=request,
            summary=result.summary,
            verified=result.verified,
            verified_state=result.verified_state,
            graph_request_id=result.graph_request_id,
        )

        def record(latest: Case) -> Case:
            changes: dict[str, Any] = {}
            if result.verified_at is not None and result.verified:
                changes["account"] = AccountState(enabled=False, checked_at=result.verified_at)
                changes["status"] = CaseStatus.CONTAINED
            return latest.revised(**changes)

        case = await self._store.update_case(case.id, record)
        channel = await self._store.get_channel()
        if channel is None:
            return
        case = await self._publish(case.id, channel)
        if case.card is not None:
            await self._messenger.reply_in_thread(
                channel, case.card, render_result_reply(case, request, links=self._links)
            )

    async def _fail_unstarted(self, request: ActionRequest, reason: str) -> None:
        # Closing it frees the case for a new request (one active request per case).
        def abort(latest: ActionRequest) -> ActionRequest | None:
            outcome = decide(latest, Abort(reason), self._policy, self._clock())
            return None if isinstance(outcome, Refused) else outcome

        await self._store.update_request(request.id, abort)
        await self._store.update_case(request.case_id, lambda c: c.revised())

    async def _run_action(self, request: ActionRequest, case: Case) -> ActionResult:
        try:
            return await actions.disable_account(self._graph, case.identity, now=self._clock)
        except RemediationError as exc:
            return ActionResult(succeeded=False, summary=exc.message)

    # -- time passing -------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Expire overdue requests and remind approvers of waiting ones."""
        now = self._clock()
        for request in await self._store.list_requests_in(OPEN_STATES):
            if now >= request.expires_at:
                await self._expire(request.id)
            elif self._needs_reminder(request, now):
                await self._remind(request.id)

    def _needs_reminder(self, request: ActionRequest, now: datetime) -> bool:
        wait = self._policy.reminder_after
        return (
            wait is not None
            and request.state is RequestState.PENDING
            and request.reminded_at is None
            and now - request.created_at >= wait
        )

    async def _expire(self, request_id: str) -> None:
        def expire(latest: ActionRequest) -> ActionRequest | None:
            outcome = decide(latest, Expire(), self._policy, self._clock())
            return None if isinstance(outcome, Refused) else outcome

        before = await self._store.get_request(request_id)
        request = await self._store.update_request(request_id, expire)
        if (
            before is None
            or request.state is not RequestState.EXPIRED
            or before.state is RequestState.EXPIRED
        ):
            return
        case = await self._require_case(request.case_id)
        log.info("request %s expired", request.id)
        await self._audit("request.expired", case=case, request=request)
        await self._store.update_case(case.id, lambda c: c.revised())
        await self._announce(case.id, request.id)

    async def _remind(self, request_id: str) -> None:
        now = self._clock()

        def mark(latest: ActionRequest) -> ActionRequest | None:
            if not self._needs_reminder(latest, now):
                return None
            return latest.model_copy(update={"reminded_at": now})

        before = await self._store.get_request(request_id)
        request = await self._store.update_request(request_id, mark)
        if before is None or request.reminded_at is None or before.reminded_at is not None:
            return
        case = await self._require_case(request.case_id)
        await self._audit("request.reminded", case=case, request=request)
        mentions = await self._directory.named_approvers()
        await self._announce(
            case.id, request.id, [m for m in mentions if not m.same_person(request.requester)]
        )

    # -- chat ---------------------------------------------------------------------------------

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
