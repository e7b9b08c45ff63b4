"""The response surface in the pure domain: which Defender action runs on which provider, picks of
linked accounts, automatic containment and its roll-back, step idempotency on retry, and which
alerts may be written back to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.approval import Refused, Retry, decide, open_request
from bot.domain.models import (
    DEFENDER_PROVIDER_ACTIONS,
    AccountState,
    ActionResult,
    Actor,
    Alert,
    AlertSource,
    Case,
    CaseStatus,
    IdentityFacts,
    IdentityRef,
    LinkedAccount,
    Provider,
    RequestState,
    ResponseAction,
    Severity,
    StepOutcome,
    Verification,
)
from bot.domain.plans import Operation, offered_actions, plan
from bot.domain.policy import ActorRoles, Policy, Principals, TargetFacts
from bot.services.clicks import picked_accounts
from bot.tenant.intake import is_disrupted

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
USER = IdentityRef(object_id="u-1", upn="adele@contoso.com", display_name="Adele Vance")
EVERY_ACTION = frozenset(a for actions in DEFENDER_PROVIDER_ACTIONS.values() for a in actions)


def _account(provider: Provider, actions: frozenset[str] = frozenset()) -> LinkedAccount:
    return LinkedAccount(
        identity_id="mdi-1", identifier=f"{provider.value}-1", provider=provider, actions=actions
    )


AD = _account(Provider.ACTIVE_DIRECTORY)
ENTRA = _account(Provider.ENTRA)
OKTA = _account(Provider.OKTA)
LINKED = IdentityFacts(synced=True, on_prem_sid="S-1-5-21-1", linked=(AD, ENTRA, OKTA), risk_state="atRisk")


def _alert(
    *, disrupted: bool = False, alert_id: str = "a1", source: AlertSource = AlertSource.DEFENDER_FOR_IDENTITY
) -> Alert:
    return Alert(
        id=alert_id,
        source=source,
        title="t",
        severity=Severity.HIGH,
        status="new",
        created_at=NOW - timedelta(minutes=20),
        updated_at=NOW - timedelta(minutes=15),
        target=USER,
        disrupted=disrupted,
    )


def _case(facts: IdentityFacts = LINKED, **changes: object) -> Case:
    case = Case(id="c1", identity=USER, alerts=(_alert(),), opened_at=NOW, facts=facts)
    return case.model_copy(update=changes)


@pytest.mark.parametrize("provider", list(Provider))
@pytest.mark.parametrize("action", sorted(EVERY_ACTION))
def test_a_defender_action_runs_only_where_its_provider_supports_it(provider: Provider, action: str) -> None:
    # Even an account that lists the action is not acted on where the docs say the provider cannot.
    account = _account(provider, frozenset(EVERY_ACTION))
    assert account.supports(action) is (action in DEFENDER_PROVIDER_ACTIONS[provider.value])


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (ResponseAction.REQUIRE_SIGN_IN_AGAIN, [("requireUserToSignInAgain", Provider.ENTRA)]),
        (ResponseAction.MARK_COMPROMISED, [("markUserAsCompromised", Provider.ENTRA)]),
        (
            ResponseAction.DISABLE_ACCOUNT,
            [("disable", Provider.ACTIVE_DIRECTORY), ("", Provider.ENTRA), ("disable", Provider.OKTA)],
        ),
        (ResponseAction.FORCE_PASSWORD_CHANGE, [("forcePasswordReset", Provider.ACTIVE_DIRECTORY)]),
        (ResponseAction.REVOKE_SESSIONS, [("", Provider.ENTRA), ("revokeAllSessions", Provider.OKTA)]),
        (ResponseAction.CONFIRM_SAFE, [("", Provider.ENTRA)]),
    ],
)
def test_each_action_on_every_linked_account(
    action: ResponseAction, expected: list[tuple[str, Provider]]
) -> None:
    steps = plan(action, _case())
    assert not isinstance(steps, Refused)
    assert [(s.defender_action, s.provider) for s in steps] == expected


def test_without_an_entra_account_in_defender_its_actions_are_not_offered() -> None:
    facts = LINKED.model_copy(update={"linked": (AD, OKTA)})
    offered = offered_actions(_case(facts))
    assert ResponseAction.REQUIRE_SIGN_IN_AGAIN not in offered
    assert ResponseAction.MARK_COMPROMISED not in offered
    refused = plan(ResponseAction.REQUIRE_SIGN_IN_AGAIN, _case(facts))
    assert isinstance(refused, Refused) and "no Entra ID account" in refused.reason


def test_picked_accounts_narrow_the_plan_and_unknown_ones_are_refused() -> None:
    case = _case()
    steps = plan(ResponseAction.DISABLE_ACCOUNT, case, (Provider.OKTA,))
    assert not isinstance(steps, Refused) and [s.provider for s in steps] == [Provider.OKTA]
    cloud_only = _case(IdentityFacts())
    assert isinstance(plan(ResponseAction.DISABLE_ACCOUNT, cloud_only, (Provider.OKTA,)), Refused)
    assert isinstance(plan(ResponseAction.CONFIRM_SAFE, case, (Provider.OKTA,)), Refused)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, ((), ())),
        ({"accounts": "okta"}, ((Provider.OKTA,), ())),
        ({"accounts": "activeDirectory,entraID,okta"}, ((), ())),
        ({"accounts": "okta", "addRevokeSessions": "true"}, ((Provider.OKTA,), ())),
    ],
)
def test_card_picks_are_read_against_the_case(data: dict[str, str], expected: object) -> None:
    assert picked_accounts(_case(), ResponseAction.DISABLE_ACCOUNT, data) == expected


@pytest.mark.parametrize(
    "data",
    [
        {"accounts": "google"},
        {"accounts": ""},
        {"accounts": ["okta"]},
        {"addRevokeSessions": "yes"},
        {"addPasswordChange": 1},
    ],
)
def test_forged_picks_are_refused(data: dict[str, object]) -> None:
    assert isinstance(picked_accounts(_case(), ResponseAction.KEEP_CONTAINED, data), Refused)


def test_keep_contained_adds_only_what_was_ticked() -> None:
    data = {"addRevokeSessions": "true", "addPasswordChange": "false"}
    assert picked_accounts(_case(), ResponseAction.KEEP_CONTAINED, data) == (
        (),
        (ResponseAction.REVOKE_SESSIONS,),
    )
    contained = _disrupted()
    steps = plan(ResponseAction.KEEP_CONTAINED, contained, (), (ResponseAction.REVOKE_SESSIONS,))
    assert not isinstance(steps, Refused)
    assert [s.operation for s in steps] == [
        Operation.VERIFY_DISABLED,
        Operation.VERIFY_DISABLED,
        Operation.ENTRA_REVOKE_SESSIONS,
        Operation.DEFENDER_ACTION,
    ]
    assert [s.sends for s in steps] == [False, False, True, True]


def _disrupted() -> Case:
    case = _case(account=AccountState(enabled=False, checked_at=NOW))
    return case.with_alert(_alert(disrupted=True, alert_id="a2"))


def test_a_disruption_tagged_alert_on_a_disabled_account_is_contained_automatically() -> None:
    case = _disrupted()
    assert case.status is CaseStatus.CONTAINED and case.awaiting_ratification
    assert case.auto_contained_at == NOW - timedelta(minutes=15)
    assert "attack disruption" in case.auto_contained_by
    assert offered_actions(case) == [ResponseAction.KEEP_CONTAINED, ResponseAction.ENABLE_ACCOUNT]


def test_an_account_found_disabled_is_contained_automatically_and_an_enabled_one_is_not() -> None:
    found = _case(account=AccountState(enabled=False, checked_at=NOW)).reconciled()
    assert found.awaiting_ratification and found.auto_contained_by == "found disabled when the case opened"
    enabled = _case(account=AccountState(enabled=True, checked_at=NOW)).with_alert(
        _alert(disrupted=True, alert_id="a2")
    )
    assert enabled.status is CaseStatus.OPEN and enabled.auto_contained_at is None


POLICY = Policy(
    responders=Principals(users=frozenset({"alex", "megan"})),
    approvers=Principals(users=frozenset({"alex", "megan"})),
    approvals={ResponseAction.ENABLE_ACCOUNT: 1},
)
ALEX = Actor(object_id="alex", name="Alex")


def test_rolling_back_automatic_containment_always_needs_two_approvers() -> None:
    request = open_request(
        _disrupted(),
        ResponseAction.ENABLE_ACCOUNT,
        ALEX,
        ActorRoles(object_id="alex", responder=True, approver=True),
        "user confirmed the activity",
        POLICY,
        NOW,
        target=TargetFacts(),
        destructive_last_hour=0,
        request_id="r1",
    )
    assert not isinstance(request, Refused)
    assert request.required_approvals == 2 and request.state is RequestState.PENDING
    assert "suspicious account enablement after disruption" in request.privileged_reason


def test_keep_contained_is_refused_where_nothing_was_contained_automatically() -> None:
    refused = open_request(
        _case(),
        ResponseAction.KEEP_CONTAINED,
        ALEX,
        ActorRoles(object_id="alex", responder=True, approver=True),
        "why",
        POLICY,
        NOW,
        target=TargetFacts(),
        destructive_last_hour=0,
        request_id="r1",
    )
    assert isinstance(refused, Refused)


def test_a_retry_carries_over_the_steps_that_took_effect() -> None:
    request = open_request(
        _case(),
        ResponseAction.DISABLE_ACCOUNT,
        ALEX,
        ActorRoles(object_id="alex", responder=True, approver=True),
        "why",
        POLICY,
        NOW,
        target=TargetFacts(),
        destructive_last_hour=0,
        request_id="r1",
    )
    assert not isinstance(request, Refused)
    done = StepOutcome(
        step="okta",
        provider=Provider.OKTA,
        ok=True,
        message="",
        verification=Verification.UNVERIFIABLE,
        key="k/okta",
    )
    failed = StepOutcome(step="ad", provider=Provider.ACTIVE_DIRECTORY, ok=False, message="400", key="k/ad")
    pending = StepOutcome(
        step="entra",
        provider=Provider.ENTRA,
        ok=True,
        message="",
        verification=Verification.PENDING,
        key="k/entra",
    )
    ran = request.model_copy(
        update={
            "state": RequestState.FAILED,
            "started_at": NOW,
            "result": ActionResult(succeeded=False, summary="failed", steps=(failed, pending, done)),
        }
    )
    retried = decide(
        ran, Retry(ALEX, ActorRoles(object_id="alex", responder=True, approver=True)), POLICY, NOW
    )
    assert not isinstance(retried, Refused)
    assert [s.key for s in retried.done_steps] == ["k/okta"]
    assert retried.step_key_base == request.step_key_base, "the same request, whatever the attempt"


def test_only_alerts_in_alerts_v2_are_written_back_to() -> None:
    assert _alert().in_alerts_v2
    assert not _alert(alert_id="riskyUser:u-1", source=AlertSource.IDENTITY_PROTECTION).in_alerts_v2
    assert not _alert(alert_id="push:inc-42", source=AlertSource.PUSHED).in_alerts_v2
    assert not _alert(alert_id="manual:1", source=AlertSource.MANUAL).in_alerts_v2


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["Attack Disruption"], True),
        ([" attack disruption "], True),
        (["Ransomware"], False),
        ("Attack Disruption", False),
        (None, False),
    ],
)
def test_the_attack_disruption_tag(tags: object, expected: bool) -> None:
    assert is_disrupted({"systemTags": tags}) is expected


def test_automatic_containment_lapses_when_the_account_reads_enabled_again() -> None:
    case = _disrupted().model_copy(update={"account": AccountState(enabled=True, checked_at=NOW)})
    lapsed = case.containment_checked()
    assert lapsed.status is CaseStatus.OPEN and lapsed.auto_contained_at is None
    assert ResponseAction.DISABLE_ACCOUNT in offered_actions(lapsed)
    kept = _disrupted().model_copy(update={"ratified_at": NOW})
    assert (
        kept.model_copy(update={"account": AccountState(enabled=True)})
        .containment_checked()
        .auto_contained_at
    )
    assert _disrupted().containment_checked() == _disrupted(), "still disabled: unchanged"
