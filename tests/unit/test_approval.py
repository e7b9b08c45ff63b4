"""The approval state machine: every (state, event) pair, and the rules it must never break."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.approval import Approve, Finish, Refused, Start, decide, open_request
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
from bot.domain.policy import Policy

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
ALEX = Actor(object_id="alex-id", name="Alex Wilber")
MEGAN = Actor(object_id="megan-id", name="Megan Bowen")
EVE = Actor(object_id="eve-id", name="Eve Intruder")
POLICY = Policy(responders=frozenset({"alex-id", "megan-id"}))
TWO_PERSON = POLICY.model_copy(update={"approvals": {ResponseAction.DISABLE_ACCOUNT: 2}})
OK = ActionResult(succeeded=True, summary="done", verified=True)


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


def _request(state: RequestState, policy: Policy = POLICY) -> ActionRequest:
    opened = open_request(_case(), ResponseAction.DISABLE_ACCOUNT, ALEX, "why", policy, NOW, request_id="r1")
    assert isinstance(opened, ActionRequest)
    return opened.model_copy(update={"state": state})


def test_one_sign_off_policy_approves_at_once() -> None:
    request = open_request(
        _case(), ResponseAction.DISABLE_ACCOUNT, ALEX, " why ", POLICY, NOW, request_id="r1"
    )
    assert isinstance(request, ActionRequest)
    assert request.state is RequestState.APPROVED
    assert request.approvals == (ALEX,)
    assert request.reason == "why"
    assert request.expires_at == NOW + timedelta(minutes=30)
    assert request.idempotency_key == "c1:disableAccount:r1"


def test_two_person_policy_waits_for_a_second_person() -> None:
    request = open_request(
        _case(), ResponseAction.DISABLE_ACCOUNT, ALEX, "why", TWO_PERSON, NOW, request_id="r1"
    )
    assert isinstance(request, ActionRequest)
    assert request.state is RequestState.PENDING
    self_approval = decide(request, Approve(ALEX), TWO_PERSON, NOW)
    assert isinstance(self_approval, Refused)
    assert "different person" in self_approval.reason
    approved = decide(request, Approve(MEGAN), TWO_PERSON, NOW)
    assert isinstance(approved, ActionRequest)
    assert approved.state is RequestState.APPROVED
    assert [a.object_id for a in approved.approvals] == ["alex-id", "megan-id"]


@pytest.mark.parametrize(
    ("policy", "actor", "words"),
    [
        (Policy(), ALEX, "No responders are configured"),
        (POLICY, EVE, "not an authorized responder"),
    ],
)
def test_open_request_fails_closed(policy: Policy, actor: Actor, words: str) -> None:
    outcome = open_request(
        _case(), ResponseAction.DISABLE_ACCOUNT, actor, "why", policy, NOW, request_id="r1"
    )
    assert isinstance(outcome, Refused)
    assert words in outcome.reason


def test_responder_ids_match_case_insensitively() -> None:
    upper = Actor(object_id="ALEX-ID", name="Alex")
    outcome = open_request(
        _case(), ResponseAction.DISABLE_ACCOUNT, upper, "why", POLICY, NOW, request_id="r1"
    )
    assert isinstance(outcome, ActionRequest)


def test_an_already_contained_account_is_not_disabled_again() -> None:
    outcome = open_request(
        _case(CaseStatus.CONTAINED), ResponseAction.DISABLE_ACCOUNT, ALEX, "why", POLICY, NOW, request_id="r1"
    )
    assert isinstance(outcome, Refused)
    assert "already disabled" in outcome.reason


# Every (state, event) pair: the resulting state, or None for a refusal.
EVENTS = {
    "approve": Approve(MEGAN),
    "start": Start(),
    "finish-ok": Finish(OK),
    "finish-failed": Finish(ActionResult(succeeded=False, summary="403")),
}
EXPECTED: dict[tuple[RequestState, str], RequestState | None] = {
    (RequestState.PENDING, "approve"): RequestState.APPROVED,
    (RequestState.APPROVED, "start"): RequestState.EXECUTING,
    (RequestState.EXECUTING, "finish-ok"): RequestState.SUCCEEDED,
    (RequestState.EXECUTING, "finish-failed"): RequestState.FAILED,
}


@pytest.mark.parametrize("state", list(RequestState))
@pytest.mark.parametrize("event_name", list(EVENTS))
def test_every_state_and_event(state: RequestState, event_name: str) -> None:
    # A consistent request for each state: pending has one of two sign-offs, the rest both.
    approvals = (ALEX,) if state is RequestState.PENDING else (ALEX, MEGAN)
    request = _request(state, TWO_PERSON).model_copy(update={"approvals": approvals})
    outcome = decide(request, EVENTS[event_name], TWO_PERSON, NOW)
    expected = EXPECTED.get((state, event_name))
    if expected is None:
        assert isinstance(outcome, Refused), f"{state} + {event_name} should be refused"
        assert outcome.reason
    else:
        assert isinstance(outcome, ActionRequest)
        assert outcome.state is expected


def test_expired_request_neither_approves_nor_starts() -> None:
    later = NOW + timedelta(minutes=31)
    pending = _request(RequestState.PENDING, TWO_PERSON).model_copy(update={"required_approvals": 2})
    assert isinstance(decide(pending, Approve(MEGAN), TWO_PERSON, later), Refused)
    assert isinstance(decide(_request(RequestState.APPROVED), Start(), POLICY, later), Refused)


def test_start_refuses_a_request_short_of_sign_offs() -> None:
    short = _request(RequestState.APPROVED, TWO_PERSON)
    outcome = decide(short, Start(), TWO_PERSON, NOW)
    assert isinstance(outcome, Refused)
    assert "needs 2 sign-offs" in outcome.reason


def test_start_rechecks_authorization() -> None:
    removed = Policy(responders=frozenset({"megan-id"}))
    outcome = decide(_request(RequestState.APPROVED), Start(), removed, NOW)
    assert isinstance(outcome, Refused)
    assert "no longer an authorized responder" in outcome.reason


def test_finish_records_result_and_time() -> None:
    running = _request(RequestState.EXECUTING)
    done = decide(running, Finish(OK), POLICY, NOW + timedelta(seconds=3))
    assert isinstance(done, ActionRequest)
    assert done.result == OK
    assert done.finished_at == NOW + timedelta(seconds=3)
