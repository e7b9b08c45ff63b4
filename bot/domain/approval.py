"""The approval lifecycle of an action request, as pure functions.

    pending ─approve─> approved ─start─> executing ─finish─> succeeded | failed
    pending ─reject | cancel | expire─> rejected | cancelled | expired

:func:`open_request` makes a request from a responder's click; :func:`decide` applies one event.
Both return either the new request or a :class:`Refused` carrying a sentence the responder reads.
Nothing here reads a clock or does I/O: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.models import (
    ActionRequest,
    ActionResult,
    Actor,
    Case,
    CaseStatus,
    RequestState,
    ResponseAction,
)
from bot.domain.policy import Policy


@dataclass(frozen=True)
class Refused:
    """A refusal; ``reason`` is shown to the person who clicked."""

    reason: str


@dataclass(frozen=True)
class Approve:
    """A person signs off."""

    actor: Actor


@dataclass(frozen=True)
class Start:
    """The executor claims an approved request."""


@dataclass(frozen=True)
class Finish:
    """The executor reports the result."""

    result: ActionResult


Event = Approve | Start | Finish
Outcome = ActionRequest | Refused


def not_a_responder(actor: Actor) -> Refused:
    """The refusal for someone outside the responder list."""
    return Refused(
        f"{actor.label} is not an authorized responder, so the bot did nothing. "
        "Ask your security admin to add you to the responder list if you should be able to act."
    )


def open_request(
    case: Case,
    action: ResponseAction,
    actor: Actor,
    reason: str,
    policy: Policy,
    now: datetime,
    *,
    request_id: str,
) -> Outcome:
    """A new request for ``action`` on ``case``'s identity, signed off by its requester.

    With one sign-off required the request is approved at once; otherwise it waits as pending.
    """
    if not policy.responders:
        return Refused(
            "No responders are configured, so nobody can act. "
            "Ask your security admin to set the responder list."
        )
    if not policy.is_responder(actor.object_id):
        return not_a_responder(actor)
    if action is ResponseAction.DISABLE_ACCOUNT and case.status is CaseStatus.CONTAINED:
        return Refused(f"{case.identity.label} is already disabled; nothing to do.")
    required = policy.approvals_for(action)
    request = ActionRequest(
        id=request_id,
        case_id=case.id,
        action=action,
        requester=actor,
        reason=reason.strip(),
        created_at=now,
        expires_at=now + policy.expiry,
        approvals=(actor,),
        required_approvals=required,
        idempotency_key=f"{case.id}:{action.value}:{request_id}",
    )
    if len(request.approvals) >= required:
        return request.model_copy(update={"state": RequestState.APPROVED})
    return request


def decide(request: ActionRequest, event: Event, policy: Policy, now: datetime) -> Outcome:
    """Apply ``event`` to ``request`` under ``policy`` at ``now``."""
    if request.state.is_final:
        return Refused(f"This request is already {request.state.value}; nothing more can happen to it.")
    if isinstance(event, Approve):
        return _approve(request, event.actor, policy, now)
    if isinstance(event, Start):
        return _start(request, policy, now)
    return _finish(request, event.result, now)


def _approve(request: ActionRequest, actor: Actor, policy: Policy, now: datetime) -> Outcome:
    if request.state is not RequestState.PENDING:
        return Refused(f"This request is {request.state.value}; it no longer needs approval.")
    if now >= request.expires_at:
        return Refused("This request has expired; ask for the action again if it is still needed.")
    if not policy.is_responder(actor.object_id):
        return not_a_responder(actor)
    if any(a.object_id.lower() == actor.object_id.lower() for a in request.approvals):
        return Refused(
            f"{actor.label} has already signed off on this request; a different person must approve it."
        )
    approvals = (*request.approvals, actor)
    state = RequestState.APPROVED if len(approvals) >= request.required_approvals else RequestState.PENDING
    return request.model_copy(update={"approvals": approvals, "state": state})


def _start(request: ActionRequest, policy: Policy, now: datetime) -> Outcome:
    if request.state is not RequestState.APPROVED:
        return Refused(f"This request is {request.state.value}, not approved; it will not run.")
    if now >= request.expires_at:
        return Refused("This request expired before it could run; ask for the action again.")
    # Authorization is checked again at execution: someone removed from the responder list
    # between their click and the run no longer counts.
    distinct = {a.object_id.lower() for a in request.approvals}
    if len(distinct) < request.required_approvals:
        return Refused(
            f"This request needs {request.required_approvals} sign-offs from different people "
            f"and has {len(distinct)}, so it will not run."
        )
    still_authorized = {a for a in distinct if policy.is_responder(a)}
    if len(still_authorized) < request.required_approvals:
        return Refused(
            "A sign-off on this request came from someone who is no longer an authorized "
            "responder, so it will not run."
        )
    return request.model_copy(update={"state": RequestState.EXECUTING, "started_at": now})


def _finish(request: ActionRequest, result: ActionResult, now: datetime) -> Outcome:
    if request.state is not RequestState.EXECUTING:
        return Refused(f"This request is {request.state.value}, not executing.")
    state = RequestState.SUCCEEDED if result.succeeded else RequestState.FAILED
    return request.model_copy(update={"state": state, "result": result, "finished_at": now})
