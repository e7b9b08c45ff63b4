"""The approval state machine: every (state, event) pair, and the rules it must never break."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.approval import (
    MAX_REASON_CHARS,
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
    Case,
    CaseStatus,
    IdentityRef,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.domain.policy import ActorRoles, Policy, Principals, TargetFacts

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
ALEX = Actor(object_id="alex-id", name="Alex Wilber")
MEGAN = Actor(object_id="megan-id", name="Megan Bowen")
RESPONDER_ONLY = Actor(object_id="rita-id", name="Rita Responder")
EVE = Actor(object_id="eve-id", name="Eve Intruder")
PEOPLE = Principals(users=frozenset({"alex-id", "megan-id"}))
POLICY = Policy(responders=Principals(users=frozenset({"alex-id", "megan-id", "rita-id"})), approvers=PEOPLE)
TWO_PERSON = POLICY.model_copy(update={"approvals": {ResponseAction.DISABLE_ACCOUNT: 2}})
PLAIN = TargetFacts()
OK = ActionResult(succeeded=True, summary="done", verified=True)


def roles(actor: Actor, policy: Policy = POLICY) -> ActorRoles:
    """What the directory lookup would resolve for a directly listed user."""
    return ActorRoles(
        object_id=actor.object_id,
        responder=policy.responders.names_user(actor.object_id),
        approver=policy.approvers.names_user(actor.object_id),
    )


def _case(status: CaseStatus = CaseStatus.OPEN) -> Case:
    target = IdentityRef(object_id="adele-id", upn="adele@contoso.com", display_name="Adele Vance")
    alert = Alert(
        id="a1",
        source=AlertSource.DEFENDER_FOR_IDENTITY,
        title="Suspected identity theft",
        severity=Severity.HIGH,
        status="new",
        created_at=NOW,
        updated_at=NOW,
        target=target,
    )
    return Case(id="c1", identity=target, alerts=(alert,), opened_at=NOW, status=status)


def _open(
    actor: Actor = ALEX,
    policy: Policy = POLICY,
    *,
    target: TargetFacts = PLAIN,
    status: CaseStatus = CaseStatus.OPEN,
    reason: str = " why ",
    destructive_last_hour: int = 0,
) -> ActionRequest | Refused:
    return open_request(
        _case(status),
        ResponseAction.DISABLE_ACCOUNT,
        actor,
        roles(actor, policy),
        reason,
        policy,
        NOW,
        target=target,
        destructive_last_hour=destructive_last_hour,
        request_id="r1",
    )


def test_an_approver_requesting_a_one_sign_off_action_is_approved_at_once() -> None:
    request = _open()
    assert isinstance(request, ActionRequest)
    assert request.state is RequestState.APPROVED
    assert request.approvals == (ALEX,)
    assert request.reason == "why"
    assert request.expires_at == NOW + timedelta(minutes=30)
    assert request.idempotency_key == "c1:disableAccount:r1"


def test_a_responder_who_is_not_an_approver_waits_for_one_sign_off() -> None:
    request = _open(RESPONDER_ONLY)
    assert isinstance(request, ActionRequest)
    assert request.state is RequestState.PENDING
    assert request.approvals == ()
    approved = decide(request, Approve(MEGAN, roles(MEGAN)), POLICY, NOW)
    assert isinstance(approved, ActionRequest) and approved.state is RequestState.APPROVED


def test_two_person_policy_needs_a_second_different_approver() -> None:
    request = _open(policy=TWO_PERSON)
    assert isinstance(request, ActionRequest) and request.state is RequestState.PENDING
    self_approval = decide(request, Approve(ALEX, roles(ALEX)), TWO_PERSON, NOW)
    assert isinstance(self_approval, Refused)
    assert "a different approver must approve it" in self_approval.reason
    approved = decide(request, Approve(MEGAN, roles(MEGAN)), TWO_PERSON, NOW)
    assert isinstance(approved, ActionRequest)
    assert approved.state is RequestState.APPROVED
    assert [a.object_id for a in approved.approvals] == ["alex-id", "megan-id"]


def test_privileged_targets_always_need_two() -> None:
    request = _open(
        target=TargetFacts(privileged=True, privileged_reason="holds the Helpdesk Administrator role")
    )
    assert isinstance(request, ActionRequest)
    assert request.required_approvals == 2
    assert request.state is RequestState.PENDING
    assert request.privileged_reason == "holds the Helpdesk Administrator role"


@pytest.mark.parametrize(
    ("policy", "actor", "kwargs", "words"),
    [
        (Policy(), ALEX, {}, "No responders are configured"),
        (POLICY, EVE, {}, "Eve Intruder is not an authorized responder"),
        (POLICY, ALEX, {"target": TargetFacts(protected=True)}, "is a protected account"),
        (POLICY, ALEX, {"status": CaseStatus.CONTAINED}, "already disabled"),
        (POLICY, ALEX, {"reason": "   "}, "Type a reason"),
        (POLICY, ALEX, {"reason": "\u200b\u202e\u2066 \ufeff"}, "Type a reason"),
        (POLICY, ALEX, {"reason": "x" * 200_000}, "The reason is 200,000 characters long"),
        (POLICY, ALEX, {"reason": "x" * 501}, "at most 500"),
        (POLICY, ALEX, {"destructive_last_hour": 20}, "blast-radius limit is reached"),
    ],
)
def test_open_request_refuses_with_a_reason(
    policy: Policy, actor: Actor, kwargs: dict[str, Any], words: str
) -> None:
    outcome = _open(actor, policy, **kwargs)
    assert isinstance(outcome, Refused)
    assert words in outcome.reason


def test_responder_ids_match_case_insensitively() -> None:
    upper = Actor(object_id="ALEX-ID", name="Alex")
    assert isinstance(_open(upper), ActionRequest)


# Every (state, event) pair under the two-person policy: the resulting state, or None for a refusal.
EVENTS: dict[str, Event] = {
    "approve-by-megan": Approve(MEGAN, roles(MEGAN)),
    "approve-by-requester": Approve(ALEX, roles(ALEX)),
    "approve-by-outsider": Approve(EVE, roles(EVE)),
    "reject-by-megan": Reject(MEGAN, roles(MEGAN), "not convinced"),
    "reject-by-requester": Reject(ALEX, roles(ALEX)),
    "cancel-by-requester": Cancel(ALEX),
    "cancel-by-megan": Cancel(MEGAN),
    "expire": Expire(),
    "remind": Remind(),
    "start": Start(current_approvers=frozenset({"alex-id", "megan-id"})),
    "start-approver-removed": Start(current_approvers=frozenset({"alex-id"})),
    "start-blast-radius": Start(
        current_approvers=frozenset({"alex-id", "megan-id"}), destructive_last_hour=20
    ),
    "abort": Abort("no longer allowed"),
    "retry-by-requester": Retry(ALEX, roles(ALEX)),  # never ran in these fixtures: refused
    "finish-ok": Finish(OK),
    "finish-failed": Finish(ActionResult(succeeded=False, summary="403")),
}
EXPECTED: dict[tuple[RequestState, str], RequestState] = {
    (RequestState.PENDING, "approve-by-megan"): RequestState.APPROVED,
    (RequestState.PENDING, "reject-by-megan"): RequestState.REJECTED,
    (RequestState.APPROVED, "reject-by-megan"): RequestState.REJECTED,
    (RequestState.PENDING, "cancel-by-requester"): RequestState.CANCELLED,
    (RequestState.APPROVED, "cancel-by-requester"): RequestState.CANCELLED,
    (RequestState.APPROVED, "start"): RequestState.EXECUTING,
    (RequestState.APPROVED, "abort"): RequestState.FAILED,
    (RequestState.EXECUTING, "finish-ok"): RequestState.SUCCEEDED,
    (RequestState.EXECUTING, "finish-failed"): RequestState.FAILED,
    (RequestState.PENDING, "remind"): RequestState.PENDING,
}


@pytest.mark.parametrize("state", list(RequestState))
@pytest.mark.parametrize("event_name", list(EVENTS))
def test_every_state_and_event(state: RequestState, event_name: str) -> None:
    # A consistent request for each state: pending has the requester's sign-off, the rest both.
    opened = _open(policy=TWO_PERSON)
    assert isinstance(opened, ActionRequest)
    approvals = (ALEX,) if state is RequestState.PENDING else (ALEX, MEGAN)
    request = opened.model_copy(update={"state": state, "approvals": approvals})
    event = EVENTS[event_name]
    # Expiry and reminders are the events that need time to have passed.
    now = {"expire": NOW + timedelta(minutes=31), "remind": NOW + timedelta(minutes=11)}.get(event_name, NOW)
    outcome = decide(request, event, TWO_PERSON, now)
    expected = EXPECTED.get((state, event_name))
    if event_name == "expire" and state in (RequestState.PENDING, RequestState.APPROVED):
        expected = RequestState.EXPIRED
    if expected is None:
        assert isinstance(outcome, Refused), f"{state} + {event_name} should be refused"
        assert outcome.reason.endswith((".", "!")), "refusals are sentences"
    else:
        assert isinstance(outcome, ActionRequest), f"{state} + {event_name} refused: {outcome}"
        assert outcome.state is expected


def test_nothing_is_decided_on_an_expired_request() -> None:
    later = NOW + timedelta(minutes=31)
    pending = _open(policy=TWO_PERSON)
    assert isinstance(pending, ActionRequest)
    assert isinstance(decide(pending, Approve(MEGAN, roles(MEGAN)), TWO_PERSON, later), Refused)
    assert isinstance(decide(pending, Reject(MEGAN, roles(MEGAN)), TWO_PERSON, later), Refused)
    approved = _open()
    assert isinstance(approved, ActionRequest)
    start = Start(current_approvers=frozenset({"alex-id"}))
    assert isinstance(decide(approved, start, POLICY, later), Refused)
    assert isinstance(decide(approved, Expire(), POLICY, NOW), Refused), "not expired yet"


def test_start_refuses_a_request_short_of_sign_offs() -> None:
    short = _open(policy=TWO_PERSON)
    assert isinstance(short, ActionRequest)
    forced = short.model_copy(update={"state": RequestState.APPROVED})
    outcome = decide(forced, Start(current_approvers=frozenset({"alex-id", "megan-id"})), TWO_PERSON, NOW)
    assert isinstance(outcome, Refused)
    assert "needs 2 sign-offs" in outcome.reason


def test_reject_and_cancel_record_who_and_why() -> None:
    pending = _open(policy=TWO_PERSON)
    assert isinstance(pending, ActionRequest)
    rejected = decide(pending, Reject(MEGAN, roles(MEGAN), " false positive "), TWO_PERSON, NOW)
    assert isinstance(rejected, ActionRequest)
    assert rejected.decided_by == MEGAN and rejected.decision_note == "false positive"
    cancelled = decide(pending, Cancel(ALEX), TWO_PERSON, NOW)
    assert isinstance(cancelled, ActionRequest) and cancelled.decided_by == ALEX


def test_the_longest_reason_and_note_are_kept_and_one_more_is_refused() -> None:
    longest = _open(reason=f"  {'r' * MAX_REASON_CHARS}  ")
    assert isinstance(longest, ActionRequest) and len(longest.reason) == MAX_REASON_CHARS
    pending = _open(policy=TWO_PERSON)
    assert isinstance(pending, ActionRequest)
    too_long = decide(pending, Reject(MEGAN, roles(MEGAN), "n" * (MAX_REASON_CHARS + 1)), TWO_PERSON, NOW)
    assert isinstance(too_long, Refused)
    assert too_long.reason == (
        "The note is 501 characters long; the bot keeps at most 500. Shorten it and try again; "
        "nothing was done."
    )
    kept = decide(pending, Reject(MEGAN, roles(MEGAN), "n" * MAX_REASON_CHARS), TWO_PERSON, NOW)
    assert isinstance(kept, ActionRequest) and kept.state is RequestState.REJECTED


def test_finish_records_result_and_time() -> None:
    approved = _open()
    assert isinstance(approved, ActionRequest)
    running = decide(approved, Start(current_approvers=frozenset({"alex-id"})), POLICY, NOW)
    assert isinstance(running, ActionRequest)
    done = decide(running, Finish(OK), POLICY, NOW + timedelta(seconds=3))
    assert isinstance(done, ActionRequest)
    assert done.result == OK
    assert done.finished_at == NOW + timedelta(seconds=3)


def test_a_failed_run_can_be_retried_while_the_approval_holds() -> None:
    approved = _open()
    assert isinstance(approved, ActionRequest)
    running = decide(approved, Start(current_approvers=frozenset({"alex-id"})), POLICY, NOW)
    assert isinstance(running, ActionRequest)
    failed = decide(running, Finish(ActionResult(succeeded=False, summary="503")), POLICY, NOW)
    assert isinstance(failed, ActionRequest) and failed.state is RequestState.FAILED
    outsider = decide(failed, Retry(EVE, roles(EVE)), POLICY, NOW)
    assert isinstance(outsider, Refused)
    retried = decide(failed, Retry(MEGAN, roles(MEGAN)), POLICY, NOW + timedelta(minutes=5))
    assert isinstance(retried, ActionRequest)
    assert retried.state is RequestState.APPROVED and retried.attempt == 2
    assert retried.idempotency_key.endswith(":2") and retried.result is None
    too_late = decide(failed, Retry(ALEX, roles(ALEX)), POLICY, NOW + timedelta(minutes=31))
    assert isinstance(too_late, Refused) and "expired" in too_late.reason
    aborted = decide(approved, Abort("approver removed"), POLICY, NOW)
    assert isinstance(aborted, ActionRequest)
    assert isinstance(decide(aborted, Retry(ALEX, roles(ALEX)), POLICY, NOW), Refused), "never ran: no retry"


def test_approvers_are_reminded_once_when_the_wait_is_over() -> None:
    pending = _open(policy=TWO_PERSON)
    assert isinstance(pending, ActionRequest) and pending.state is RequestState.PENDING
    early = decide(pending, Remind(), TWO_PERSON, NOW + timedelta(minutes=9))
    assert isinstance(early, Refused) and "not due" in early.reason
    reminded = decide(pending, Remind(), TWO_PERSON, NOW + timedelta(minutes=10))
    assert isinstance(reminded, ActionRequest) and reminded.reminded_at == NOW + timedelta(minutes=10)
    again = decide(reminded, Remind(), TWO_PERSON, NOW + timedelta(minutes=12))
    assert isinstance(again, Refused) and "already" in again.reason
    expired = decide(pending, Remind(), TWO_PERSON, NOW + timedelta(minutes=31))
    assert isinstance(expired, Refused) and "expired" in expired.reason
    never = TWO_PERSON.model_copy(update={"reminder_after": None})
    assert isinstance(decide(pending, Remind(), never, NOW + timedelta(minutes=29)), Refused)


def test_a_started_request_may_run_only_while_its_approval_holds() -> None:
    approved = _open()
    assert isinstance(approved, ActionRequest)
    assert may_run(approved, frozenset({"alex-id"}), NOW) is None
    late = may_run(approved, frozenset({"alex-id"}), NOW + timedelta(minutes=30))
    assert late is not None and "expired" in late.reason
    removed = may_run(approved, frozenset(), NOW)
    assert removed is not None and "no longer an approver" in removed.reason


def test_a_retry_starts_the_attempt_afresh() -> None:
    approved = _open()
    assert isinstance(approved, ActionRequest)
    running = decide(approved, Start(current_approvers=frozenset({"alex-id"})), POLICY, NOW)
    assert isinstance(running, ActionRequest)
    sent = running.model_copy(update={"dispatched": True})
    failed = decide(sent, Finish(ActionResult(succeeded=False, summary="503")), POLICY, NOW)
    assert isinstance(failed, ActionRequest)
    reported = failed.model_copy(update={"report_claims": 2, "reported_attempt": 1})
    retried = decide(reported, Retry(ALEX, roles(ALEX)), POLICY, NOW)
    assert isinstance(retried, ActionRequest)
    assert (retried.dispatched, retried.report_claims, retried.attempt) == (False, 0, 2)
    assert retried.reported_attempt == 1, "the earlier attempt stays reported"
