"""Property tests: whatever happens, in whatever order, an action runs at most once and only
with the sign-offs the policy asks for."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.approval import (
    Approve,
    Cancel,
    Event,
    Expire,
    Finish,
    Refused,
    Reject,
    Retry,
    Start,
    decide,
    open_request,
)
from bot.domain.models import ActionRequest, ActionResult, Actor, RequestState, ResponseAction
from bot.domain.policy import ActorRoles, Policy, Principals, TargetFacts
from tests.unit.test_approval import NOW, _case

PEOPLE = [Actor(object_id=f"user-{i}", name=f"User {i}") for i in range(5)]
# user-0..2 approve; user-0..3 may request; user-4 is nobody.
POLICY_BASE = Policy(
    responders=Principals(users=frozenset({"user-0", "user-1", "user-2", "user-3"})),
    approvers=Principals(users=frozenset({"user-0", "user-1", "user-2"})),
    blast_radius_per_hour=3,
)


def roles(actor: Actor, policy: Policy) -> ActorRoles:
    return ActorRoles(
        object_id=actor.object_id,
        responder=policy.responders.names_user(actor.object_id),
        approver=policy.approvers.names_user(actor.object_id),
    )


people = st.sampled_from(PEOPLE)
event_kinds = st.sampled_from(["approve", "reject", "cancel", "expire", "start", "finish", "fail", "retry"])
steps = st.lists(
    st.tuples(
        event_kinds, people, st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=4)
    ),
    max_size=25,
)


def _event(kind: str, actor: Actor, policy: Policy, approver_ids: frozenset[str], burst: int) -> Event:
    if kind == "approve":
        return Approve(actor, roles(actor, policy))
    if kind == "reject":
        return Reject(actor, roles(actor, policy))
    if kind == "cancel":
        return Cancel(actor)
    if kind == "expire":
        return Expire()
    if kind == "start":
        return Start(current_approvers=approver_ids, destructive_last_hour=burst)
    if kind == "retry":
        return Retry(actor, roles(actor, policy))
    return Finish(ActionResult(succeeded=kind == "finish", summary=kind))


@settings(max_examples=400, deadline=None)
@given(
    requester=people,
    required=st.sampled_from([1, 2]),
    privileged=st.booleans(),
    protected=st.booleans(),
    already=st.integers(min_value=0, max_value=4),
    removed=st.sets(st.sampled_from(["user-0", "user-1", "user-2"]), max_size=2),
    sequence=steps,
)
def test_no_sequence_runs_an_action_twice_or_without_its_sign_offs(
    requester: Actor,
    required: int,
    privileged: bool,
    protected: bool,
    already: int,
    removed: set[str],
    sequence: list[tuple[str, Actor, int, int]],
) -> None:
    policy = POLICY_BASE.model_copy(update={"approvals": {ResponseAction.DISABLE_ACCOUNT: required}})
    target = TargetFacts(privileged=privileged, protected=protected)
    opened = open_request(
        _case(),
        ResponseAction.DISABLE_ACCOUNT,
        requester,
        roles(requester, policy),
        "reason",
        policy,
        NOW,
        target=target,
        destructive_last_hour=already,
        request_id="r1",
    )
    if protected or not roles(requester, policy).responder or already >= policy.blast_radius_per_hour:
        assert isinstance(opened, Refused)
        return
    assert isinstance(opened, ActionRequest)
    request = opened
    needed = max(required, 2 if privileged else 1)
    # Approvers the directory still vouches for at execution time (some may have been removed).
    current_approvers = frozenset({"user-0", "user-1", "user-2"} - removed)
    now = NOW
    executions = 0
    successes = 0
    history = [request.state]
    for kind, actor, minutes, burst in sequence:
        now += timedelta(minutes=minutes)
        outcome = decide(request, _event(kind, actor, policy, current_approvers, burst), policy, now)
        if isinstance(outcome, Refused):
            assert outcome.reason
            continue
        if outcome.state is RequestState.SUCCEEDED and request.state is not RequestState.SUCCEEDED:
            successes += 1
        if outcome.state is RequestState.EXECUTING and request.state is not RequestState.EXECUTING:
            executions += 1
            assert executions == outcome.attempt, (
                "a run happens once per attempt; a new attempt needs a failure"
            )
            signers = {a.object_id for a in outcome.approvals}
            assert len(signers) == len(outcome.approvals), "nobody signs twice"
            assert len(signers) >= needed
            assert len(signers & current_approvers) >= needed, "only current approvers count"
            assert signers <= {"user-0", "user-1", "user-2"}
            assert now < outcome.expires_at, "never after expiry"
            assert burst < policy.blast_radius_per_hour, "never past the blast radius"
            assert not set(history) & {RequestState.REJECTED, RequestState.CANCELLED, RequestState.EXPIRED}
        approvers_before = [a.object_id for a in request.approvals]
        request = outcome
        history.append(request.state)
        if kind == "approve":
            assert actor.object_id not in approvers_before, (
                "a second sign-off never comes from the same person"
            )
    assert successes <= 1, "an action never succeeds twice"
