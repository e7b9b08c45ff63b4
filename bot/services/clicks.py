"""Clicks on a case card: asking for an action, approving, rejecting, cancelling, retrying.

Owns :class:`Clicks`: only ids and the card revision are read from the card's data (plus the
reason typed); the target, the action and who may do what come from server state. A stale
card is answered with the current one; a refusal is audited and shown on the card; a request
that just became approved is queued for execution, and the click is answered at once with the
card showing the decision: the execution, its thread reply and the alert comments follow in the
background as the leased job they are, and the card is updated for everyone when it finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bot.domain.approval import Approve, Cancel, Event, Refused, Reject, Retry, decide, open_request
from bot.domain.authn import TEAMS_CLICK, Authentication, facts_digest
from bot.domain.models import ActionRequest, Actor, Case, Provider, RequestState, ResponseAction
from bot.domain.plans import blocked, offered_actions, plan
from bot.domain.policy import StepUp
from bot.errors import DuplicateError
from bot.log_context import bind_ids
from bot.services.audit_log import AuditLog
from bot.services.execution import EXECUTE_JOB, Execution
from bot.services.ports import CardAnswer, Ports, ServiceSettings
from bot.services.publishing import Publisher
from bot.services.tasks import TaskSupervisor
from bot.services.transitions import Transitions
from bot.services.views import CaseViews
from bot.tracing import traceparent
from bot.web.metrics import Metrics
from cards.case import (
    ACCOUNTS_INPUT_ID,
    ADD_PASSWORD_CHANGE_INPUT_ID,
    ADD_REVOKE_SESSIONS_INPUT_ID,
    REASON_INPUT_ID,
)

log = logging.getLogger(__name__)

STALE_NOTE = (
    "This card was out of date, so nothing was done. Here is the current state; check it and try again."
)
_VERB_EVENTS = {"approve", "reject", "cancel", "retry"}
_VERB_AUDIT = {
    "approve": "request.approved",
    "reject": "request.rejected",
    "cancel": "request.cancelled",
    "retry": "request.retried",
}


class Clicks:
    """Answers a person's click on a case card."""

    def __init__(
        self,
        ports: Ports,
        settings: ServiceSettings,
        *,
        audit: AuditLog,
        views: CaseViews,
        transitions: Transitions,
        publisher: Publisher,
        execution: Execution,
        tasks: TaskSupervisor,
        metrics: Metrics,
    ) -> None:
        self._store = ports.store
        self._directory = ports.directory
        self._policy = ports.policy
        self._clock = ports.clock
        self._new_id = ports.new_id
        self._settings = settings
        self._audit = audit
        self._views = views
        self._transitions = transitions
        self._publisher = publisher
        self._execution = execution
        self._tasks = tasks
        self._metrics = metrics

    async def handle_card_action(
        self, actor: Actor, verb: str, data: Mapping[str, Any], *, via: Authentication = TEAMS_CLICK
    ) -> CardAnswer:
        """A person clicked a button on a case card (or its twin on the approval page).

        Only ids and the card revision are read from the card's data (plus the reason the
        person typed); the target, the action and who may do what come from server state.
        ``via`` is how the person was authenticated: a Teams click, or a sign-in on the approval
        page; decisions the policy's ``step_up`` covers count only with a fresh sign-in holding
        its authentication context.
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
        bind_ids(case_id=case.id, request_id=request.id if request is not None else None)
        if verb == "refresh":
            return CardAnswer(card=await self._views.card_for(case, actor, personal=True))
        if verb in _VERB_EVENTS:
            if request is None:
                return await self._refuse(
                    case, actor, f"The {verb} button must name a request; nothing was done.", via=via
                )
            if verb in ("approve", "retry") and blocked(case):
                # Nothing runs from a case merged into the person's other case (or unresolved).
                return await self._refuse(case, actor, blocked(case), request, via=via)
            if data.get("cardVersion") != case.revision:
                return CardAnswer(
                    card=await self._views.card_for(case, actor, note=STALE_NOTE),
                    refusal=STALE_NOTE,
                    stale=True,
                )
            return await self._decide_click(case, request, actor, verb, data, via)
        try:
            action = ResponseAction(verb)
        except ValueError:
            return await self._refuse(case, actor, f"Unknown action “{verb}”; nothing was done.", via=via)
        if data.get("cardVersion") != case.revision:
            return CardAnswer(
                card=await self._views.card_for(case, actor, note=STALE_NOTE), refusal=STALE_NOTE, stale=True
            )
        return await self._request_action(case, action, actor, data, via)

    async def _refuse(
        self,
        case: Case,
        actor: Actor,
        reason: str,
        request: ActionRequest | None = None,
        *,
        via: Authentication = TEAMS_CLICK,
        step_up: StepUp | None = None,
    ) -> CardAnswer:
        log.info("case %s: refused %s: %s", case.id, actor.object_id, reason)
        self._metrics.add("remediation_refusals_total")
        await self._audit.write(
            "request.refused",
            actor=actor,
            case=case,
            request=request,
            reason=reason,
            authentication=via.audit(),
            **({"step_up_context": step_up.context} if step_up else {}),
        )
        return CardAnswer(
            card=await self._views.card_for(case, actor, note=reason), refusal=reason, step_up=step_up
        )

    def _step_up_refusal(self, step_up: StepUp, via: Authentication) -> str:
        """Why a decision did not count for want of a fresh sign-in, and where to make it."""
        return step_up_refusal(step_up, via, page=bool(self._settings.approval_page_url), where="this card")

    async def _request_action(
        self, case: Case, action: ResponseAction, actor: Actor, data: Mapping[str, Any], via: Authentication
    ) -> CardAnswer:
        why_not = blocked(case)
        if why_not:
            return await self._refuse(case, actor, why_not, via=via)
        choices = picked_accounts(case, action, data)
        if isinstance(choices, Refused):
            return await self._refuse(case, actor, choices.reason, via=via)
        providers, extras = choices
        routed = plan(action, case, providers, extras)
        if isinstance(routed, Refused):
            return await self._refuse(case, actor, routed.reason, via=via)
        if action not in offered_actions(case) and not case.protected:
            return await self._refuse(
                case,
                actor,
                f"{action.label} does not apply to {case.identity.label} right now; nothing was done.",
                via=via,
            )
        reason = data.get(REASON_INPUT_ID)
        roles = await self._directory.roles_of(actor.object_id)
        target = await self._directory.target_facts(case.identity)
        shown = facts_digest(case, await self._views.latest_request(case.id))
        outcome = open_request(
            case,
            action,
            actor,
            roles,
            reason if isinstance(reason, str) else "",
            self._policy,
            self._clock(),
            target=target,
            destructive_last_hour=await self._transitions.destructive_last_hour(action),
            request_id=self._new_id(),
            providers=providers,
            extras=extras,
        )
        if isinstance(outcome, Refused):
            return await self._refuse(case, actor, outcome.reason, via=via)
        step_up = self._policy.step_up_for(action, privileged_target=target.privileged)
        if (
            step_up is not None
            and outcome.state is RequestState.APPROVED
            and not via.satisfies(step_up, self._clock())
        ):
            # Step-up guards the sign-off that lets the action run: here the requester's own.
            # A request that still waits for an approver may be opened anywhere; its approval
            # then needs the fresh sign-in.
            return await self._refuse(
                case, actor, self._step_up_refusal(step_up, via), via=via, step_up=step_up
            )
        try:
            request = await self._store.add_request(outcome)
        except DuplicateError:
            return await self._refuse(
                case,
                actor,
                "Another request for this case is already in progress; nothing more was done.",
                via=via,
            )
        log.info(
            "case %s: request %s (%s) by %s: %s",
            case.id,
            request.id,
            action.value,
            actor.object_id,
            request.state,
        )
        self._metrics.add("remediation_requests_total", action=action.value)
        await self._audit.write(
            "request.opened",
            actor=actor,
            case=case,
            request=request,
            action=action.value,
            reason=request.reason,
            providers=[p.value for p in request.providers],
            extras=[a.value for a in request.extras],
            required_approvals=request.required_approvals,
            signed_off=[a.object_id for a in request.approvals],
            privileged_reason=request.privileged_reason,
            authentication=via.audit(),
            facts_sha256=shown,
        )
        return await self._after_change(case, request, actor)

    async def _decide_click(
        self,
        case: Case,
        request: ActionRequest,
        actor: Actor,
        verb: str,
        data: Mapping[str, Any],
        via: Authentication,
    ) -> CardAnswer:
        roles = await self._directory.roles_of(actor.object_id)
        shown = facts_digest(case, request)
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
        step_up = self._policy.step_up_for(request.action, privileged_target=bool(request.privileged_reason))
        if (
            isinstance(event, Approve | Retry)
            and step_up is not None
            and not via.satisfies(step_up, self._clock())
            # Only a sign-off that would count is asked for more: anything the state machine
            # refuses anyway (not an approver, their own request, expired) gets that refusal.
            and not isinstance(decide(request, event, self._policy, self._clock()), Refused)
        ):
            return await self._refuse(
                case, actor, self._step_up_refusal(step_up, via), request, via=via, step_up=step_up
            )
        try:
            moved = await self._transitions.apply(request.id, event)
        except DuplicateError:
            return await self._refuse(
                case,
                actor,
                "Another request for this case is in progress; finish or cancel it first.",
                via=via,
            )
        if not moved.won:
            return await self._refuse(case, actor, moved.refusal, moved.request, via=via)
        updated = moved.request
        await self._audit.write(
            _VERB_AUDIT[verb],
            actor=actor,
            case=case,
            request=updated,
            state=updated.state.value,
            note=updated.decision_note,
            authentication=via.audit(),
            facts_sha256=shown,
        )
        return await self._after_change(case, updated, actor)

    async def _after_change(self, case: Case, request: ActionRequest, actor: Actor) -> CardAnswer:
        """Bump the card, tell the thread, and run the action if it just became approved."""
        await self._store.update_case(case.id, lambda c: c.revised())
        if request.state is RequestState.APPROVED:
            # Executions go through the store's job queue, so exactly one replica runs each one
            # and a replica that dies mid-run leaves it to another (see run_jobs).
            # The click is answered as soon as the decision is stored: nothing here waits for the
            # action, so a slow Graph call never holds the clicker (or the invoke budget).
            # The job continues the click's trace, whichever replica runs it.
            payload = {"requestId": request.id, "traceparent": traceparent()}
            await self._store.enqueue_job(EXECUTE_JOB, request.idempotency_key, payload)
            self._tasks.spawn(self._execution.run_jobs(), name=f"jobs-after-{request.id}")
        else:
            self._tasks.spawn(self._publisher.announce(case.id, request.id), name=f"announce-{request.id}")
        case = await self._views.require_case(case.id)
        return CardAnswer(card=await self._views.card_for(case, actor))


def step_up_refusal(step_up: StepUp, via: Authentication, *, page: bool, where: str) -> str:
    """Why a decision did not count for want of a fresh sign-in, and where to make it (``page``:
    the approval page is configured; ``where``: what carries its link, "this card")."""
    minutes = int(step_up.max_age.total_seconds() // 60)
    needs = (
        f"This decision needs a sign-in with MFA from the last {minutes} minutes "
        f"(authentication context {step_up.context})"
    )
    if via.method == "signin":
        return f"{needs}; this sign-in does not provide it. Sign in again with MFA; nothing was done."
    if page:
        return (
            f"{needs}, which a click in Teams cannot prove. Use “Open approval page” on {where} "
            "to decide there; nothing was done."
        )
    return (
        f"{needs}, and the approval page is not configured (APPROVAL_PAGE_URL). "
        "Ask your security admin; nothing was done."
    )


_TOGGLES = {
    ADD_REVOKE_SESSIONS_INPUT_ID: ResponseAction.REVOKE_SESSIONS,
    ADD_PASSWORD_CHANGE_INPUT_ID: ResponseAction.FORCE_PASSWORD_CHANGE,
}


def picked_accounts(
    case: Case, action: ResponseAction, data: Mapping[str, Any]
) -> tuple[tuple[Provider, ...], tuple[ResponseAction, ...]] | Refused:
    """The accounts a responder picked on the card (empty: all of them) and what they added to
    Keep contained, checked against the case: a value the card did not offer is refused."""
    providers: list[Provider] = []
    raw = data.get(ACCOUNTS_INPUT_ID)
    if raw is not None:
        if not isinstance(raw, str):
            return Refused("The accounts picked are not readable; nothing was done.")
        known = {p.value: p for p in case.facts.providers}
        for value in (v.strip() for v in raw.split(",")):
            if not value:
                continue
            if value not in known:
                return Refused("An account picked is not an account of this person; nothing was done.")
            if known[value] not in providers:
                providers.append(known[value])
        if not providers:
            return Refused("Pick at least one account to act on; nothing was done.")
        if set(providers) == set(case.facts.providers):
            providers = []  # all of them, as without a pick
        providers.sort(key=list(Provider).index)
    extras: list[ResponseAction] = []
    for input_id, extra in _TOGGLES.items():
        toggle = data.get(input_id)
        if toggle is None or toggle == "false":
            continue
        if toggle != "true":
            return Refused("A choice on the card is not readable; nothing was done.")
        if action is ResponseAction.KEEP_CONTAINED:
            extras.append(extra)
    return tuple(providers), tuple(extras)
