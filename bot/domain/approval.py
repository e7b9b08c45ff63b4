"""The approval lifecycle of an action request, as pure functions.

    pending ─approve (enough distinct approvers)─> approved ─start─> executing ─finish─> succeeded | failed
    pending | approved ─reject─> rejected      pending | approved ─cancel─> cancelled
    pending | approved ─expire─> expired
    pending ─remind (once, after the policy's wait)─> pending, approvers reminded
    failed (after running) ─retry, before expiry─> approved
    approved ─abort (a re-check at execution failed)─> failed, never run

:func:`open_request` makes a request from a responder's click; :func:`decide` applies one event.
Both return the new request or a :class:`Refused` carrying a sentence the person reads. Nothing
here reads a clock, looks anything up or does I/O: ``now``, the people's roles (group membership
already resolved) and the facts about the target are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.models import (
    ActionRequest,
    ActionResult,
    Actor,
    Case,
    CaseStatus,
    Provider,
    RequestState,
    ResponseAction,
)
from bot.domain.policy import ActorRoles, Policy, TargetFacts

ROLLBACK_WHY_TWO = (
    "rolling back automatic containment always needs two approvers (Defender raises a "
    "'suspicious account enablement after disruption' alert)"
)

MAX_REASON_CHARS = 500
"""The longest reason or decision note the bot keeps (characters); the card's input says the same,
but only this check holds against a forged click."""


@dataclass(frozen=True)
class Refused:
    """A refusal; ``reason`` is shown to the person who clicked and kept in the audit trail."""

    reason: str


@dataclass(frozen=True)
class Approve:
    """A person signs off."""

    actor: Actor
    roles: ActorRoles


@dataclass(frozen=True)
class Reject:
    """An approver turns the request down."""

    actor: Actor
    roles: ActorRoles
    note: str = ""


@dataclass(frozen=True)
class Cancel:
    """The requester withdraws the request."""

    actor: Actor


@dataclass(frozen=True)
class Retry:
    """Run a failed request again while its approval is still valid (requester or an approver)."""

    actor: Actor
    roles: ActorRoles


@dataclass(frozen=True)
class Expire:
    """The clock ran out before the request ran."""


@dataclass(frozen=True)
class Remind:
    """The approvers of a request still waiting are reminded (once)."""


@dataclass(frozen=True)
class Start:
    """The executor claims an approved request.

    ``current_approvers`` are the object ids (lower-case) among the request's sign-offs who are
    approvers right now; ``destructive_last_hour`` counts destructive actions started tenant-wide
    in the past hour, this one excluded.
    """

    current_approvers: frozenset[str]
    destructive_last_hour: int = 0


@dataclass(frozen=True)
class Abort:
    """An approved request may no longer run (a re-check at execution failed); it fails unrun."""

    reason: str


@dataclass(frozen=True)
class Finish:
    """The executor reports the result."""

    result: ActionResult


Event = Approve | Reject | Cancel | Retry | Expire | Remind | Start | Abort | Finish
Outcome = ActionRequest | Refused


def not_a_responder(actor: Actor) -> Refused:
    """The refusal for someone outside the responders."""
    return Refused(
        f"{actor.label} is not an authorized responder, so the bot did nothing. "
        "Ask your security admin to add you to the responders in the policy if you should be able to act."
    )


def not_an_approver(actor: Actor) -> Refused:
    """The refusal for someone outside the approvers."""
    return Refused(
        f"{actor.label} is not an approver, so this click changed nothing. "
        "Only the approvers named in the policy can approve or reject."
    )


def blast_radius_reached(policy: Policy) -> Refused:
    """The refusal once the hourly limit of destructive actions is used up."""
    return Refused(
        f"The blast-radius limit is reached: at most {policy.blast_radius_per_hour} destructive actions "
        "may run per hour across the tenant, so this one was refused. If this is a real mass compromise, "
        "ask your security admin to raise the limit in the policy."
    )


def open_request(
    case: Case,
    action: ResponseAction,
    actor: Actor,
    roles: ActorRoles,
    reason: str,
    policy: Policy,
    now: datetime,
    *,
    target: TargetFacts,
    destructive_last_hour: int,
    request_id: str,
    providers: Sequence[Provider] = (),
    extras: Sequence[ResponseAction] = (),
) -> Outcome:
    """A new request for ``action`` on ``case``'s identity.

    A requester who is also an approver counts as the first sign-off; when that is enough the
    request is approved at once, otherwise it waits as pending. ``providers`` narrows the
    request to the accounts the responder picked (empty: all of them); ``extras`` are what a
    Keep contained request adds. Rolling back automatic containment always needs two approvers.
    """
    if policy.responders.empty:
        return Refused(
            "No responders are configured, so nobody can act. "
            "Ask your security admin to set them in the policy."
        )
    if not roles.responder:
        return not_a_responder(actor)
    if target.protected:
        return Refused(
            f"{case.identity.label} is a protected account (break-glass or service account): "
            "the bot never acts on it. Handle it by hand with your break-glass procedure."
        )
    if action is ResponseAction.DISABLE_ACCOUNT and case.status is CaseStatus.CONTAINED:
        return Refused(f"{case.identity.label} is already disabled; nothing to do.")
    if action is ResponseAction.ENABLE_ACCOUNT and case.status is not CaseStatus.CONTAINED:
        return Refused(f"{case.identity.label} was not disabled by a response here; nothing to re-enable.")
    if action is ResponseAction.KEEP_CONTAINED and not case.awaiting_ratification:
        return Refused(
            f"{case.identity.label} is not awaiting a decision on automatic containment; nothing to keep."
        )
    if not _has_visible_text(reason):
        return Refused("Type a reason before you act; nothing was done.")
    too_long = _too_long("reason", reason)
    if too_long is not None:
        return too_long
    if action in policy.destructive_actions and destructive_last_hour >= policy.blast_radius_per_hour:
        return blast_radius_reached(policy)
    required = policy.approvals_for(action, privileged_target=target.privileged)
    why_two = target.privileged_reason if target.privileged else ""
    if action is ResponseAction.ENABLE_ACCOUNT and case.auto_contained_at is not None:
        # Undoing automatic attack disruption (or a disable nobody here asked for) is never one
        # person's call: Defender raises an alert for it, and the attacker may still be active.
        required = max(required, 2)
        why_two = why_two or ROLLBACK_WHY_TWO
    approvals = (actor,) if roles.approver else ()
    request = ActionRequest(
        id=request_id,
        case_id=case.id,
        action=action,
        requester=actor,
        reason=reason.strip(),
        created_at=now,
        expires_at=now + policy.expiry,
        approvals=approvals,
        required_approvals=required,
        privileged_reason=why_two,
        providers=tuple(providers),
        extras=tuple(extras),
        idempotency_key=f"{case.id}:{action.value}:{request_id}",
    )
    if len(approvals) >= required:
        return request.model_copy(update={"state": RequestState.APPROVED})
    return request


def _has_visible_text(text: str) -> bool:
    # Spaces, zero-width and direction marks alone are not a reason.
    return any(char.isprintable() and not char.isspace() for char in text)


def _too_long(what: str, text: str) -> Refused | None:
    length = len(text.strip())
    if length <= MAX_REASON_CHARS:
        return None
    return Refused(
        f"The {what} is {length:,} characters long; the bot keeps at most {MAX_REASON_CHARS}. "
        "Shorten it and try again; nothing was done."
    )


def decide(request: ActionRequest, event: Event, policy: Policy, now: datetime) -> Outcome:
    """Apply ``event`` to ``request`` under ``policy`` at ``now``."""
    if isinstance(event, Retry):
        return _retry(request, event, now)
    if request.state.is_final:
        return Refused(f"This request is already {request.state.value}; nothing more can happen to it.")
    if isinstance(event, Approve):
        return _approve(request, event, now)
    if isinstance(event, Reject):
        return _reject(request, event, now)
    if isinstance(event, Cancel):
        return _cancel(request, event.actor, now)
    if isinstance(event, Expire):
        return _expire(request, now)
    if isinstance(event, Remind):
        return _remind(request, policy, now)
    if isinstance(event, Start):
        return _start(request, event, policy, now)
    if isinstance(event, Abort):
        if request.state is not RequestState.APPROVED:
            return Refused(f"This request is {request.state.value}, not approved.")
        result = ActionResult(succeeded=False, summary=f"Not run: {event.reason}")
        return request.model_copy(update={"state": RequestState.FAILED, "result": result, "finished_at": now})
    return _finish(request, event.result, now)


def _open_for_decision(request: ActionRequest, now: datetime) -> Refused | None:
    if request.state not in (RequestState.PENDING, RequestState.APPROVED):
        return Refused(f"This request is {request.state.value}; it can no longer be changed.")
    if now >= request.expires_at:
        return Refused("This request has expired; ask for the action again if it is still needed.")
    return None


def _approve(request: ActionRequest, event: Approve, now: datetime) -> Outcome:
    actor = event.actor
    if request.state is not RequestState.PENDING:
        return Refused(f"This request is {request.state.value}; it no longer needs approval.")
    if now >= request.expires_at:
        return Refused("This request has expired; ask for the action again if it is still needed.")
    if not event.roles.approver:
        return not_an_approver(actor)
    if actor.same_person(request.requester):
        return Refused(
            "You asked for this action, so your approval cannot be the second one: "
            "a different approver must approve it."
        )
    if any(actor.same_person(a) for a in request.approvals):
        return Refused(
            f"{actor.label} has already signed off on this request; a different approver must approve it."
        )
    approvals = (*request.approvals, actor)
    state = RequestState.APPROVED if len(approvals) >= request.required_approvals else RequestState.PENDING
    return request.model_copy(update={"approvals": approvals, "state": state})


def _reject(request: ActionRequest, event: Reject, now: datetime) -> Outcome:
    closed = _open_for_decision(request, now)
    if closed is not None:
        return closed
    if not event.roles.approver:
        return not_an_approver(event.actor)
    if event.actor.same_person(request.requester):
        return Refused("You asked for this action; use Cancel to withdraw it.")
    too_long = _too_long("note", event.note)
    if too_long is not None:
        return too_long
    return request.model_copy(
        update={
            "state": RequestState.REJECTED,
            "decided_by": event.actor,
            "decision_note": event.note.strip(),
            "finished_at": now,
        }
    )


def _cancel(request: ActionRequest, actor: Actor, now: datetime) -> Outcome:
    if request.state not in (RequestState.PENDING, RequestState.APPROVED):
        return Refused(f"This request is {request.state.value}; it can no longer be cancelled.")
    if not actor.same_person(request.requester):
        return Refused(f"Only {request.requester.label}, who asked for this action, can cancel it.")
    return request.model_copy(
        update={"state": RequestState.CANCELLED, "decided_by": actor, "finished_at": now}
    )


def _retry(request: ActionRequest, event: Retry, now: datetime) -> Outcome:
    if request.state is not RequestState.FAILED or request.started_at is None:
        return Refused("Only an action that ran and failed can be retried.")
    if now >= request.expires_at:
        return Refused("The approval of this request has expired; ask for the action again.")
    if not (event.actor.same_person(request.requester) or event.roles.approver):
        return not_an_approver(event.actor)
    attempt = request.attempt + 1
    # Steps of the failed attempt that took effect are kept by their idempotency keys: the next
    # attempt carries them over and sends only what did not take effect.
    done = {s.key: s for s in request.done_steps if s.key}
    if request.result is not None:
        done.update({s.key: s for s in request.result.steps if s.key and s.done})
    return request.model_copy(
        update={
            "done_steps": tuple(done.values()),
            "state": RequestState.APPROVED,
            "attempt": attempt,
            "idempotency_key": f"{request.case_id}:{request.action.value}:{request.id}:{attempt}",
            "result": None,
            "started_at": None,
            "finished_at": None,
            "dispatched": False,
            "report_claims": 0,
        }
    )


def _expire(request: ActionRequest, now: datetime) -> Outcome:
    if request.state not in (RequestState.PENDING, RequestState.APPROVED):
        return Refused(f"This request is {request.state.value}; it cannot expire.")
    if now < request.expires_at:
        return Refused("This request has not expired yet.")
    return request.model_copy(update={"state": RequestState.EXPIRED, "finished_at": now})


def _remind(request: ActionRequest, policy: Policy, now: datetime) -> Outcome:
    if request.state is not RequestState.PENDING:
        return Refused(f"This request is {request.state.value}; nobody needs reminding.")
    if request.reminded_at is not None:
        return Refused("The approvers were reminded of this request already.")
    if now >= request.expires_at:
        return Refused("This request has expired; nobody needs reminding.")
    wait = policy.reminder_after
    if wait is None or now - request.created_at < wait:
        return Refused("This request is not due for a reminder yet.")
    return request.model_copy(update={"reminded_at": now})


def may_run(request: ActionRequest, current_approvers: frozenset[str], now: datetime) -> Refused | None:
    """Why ``request`` may not send its action now (``None``: it may).

    Checked when a request starts, and again when a worker takes over a started request whose
    action was never sent (its first worker died first): expiry, and enough distinct sign-offs
    from people who are approvers right now (``current_approvers``, object ids lower-case).
    """
    if now >= request.expires_at:
        return Refused("This request expired before it could run; ask for the action again.")
    distinct = {a.object_id.lower() for a in request.approvals}
    if len(distinct) < request.required_approvals:
        return Refused(
            f"This request needs {request.required_approvals} sign-offs from different approvers "
            f"and has {len(distinct)}, so it will not run."
        )
    # Authorization is checked again at execution: someone removed from the approvers between
    # their click and the run no longer counts.
    if len(distinct & current_approvers) < request.required_approvals:
        return Refused(
            "A sign-off on this request came from someone who is no longer an approver, so it will not run. "
            "Ask for the action again."
        )
    return None


def _start(request: ActionRequest, event: Start, policy: Policy, now: datetime) -> Outcome:
    if request.state is not RequestState.APPROVED:
        return Refused(f"This request is {request.state.value}, not approved; it will not run.")
    refused = may_run(request, event.current_approvers, now)
    if refused is not None:
        return refused
    if (
        request.action in policy.destructive_actions
        and event.destructive_last_hour >= policy.blast_radius_per_hour
    ):
        return blast_radius_reached(policy)
    return request.model_copy(update={"state": RequestState.EXECUTING, "started_at": now})


def _finish(request: ActionRequest, result: ActionResult, now: datetime) -> Outcome:
    if request.state is not RequestState.EXECUTING:
        return Refused(f"This request is {request.state.value}, not executing.")
    state = RequestState.SUCCEEDED if result.succeeded else RequestState.FAILED
    return request.model_copy(update={"state": state, "result": result, "finished_at": now})
