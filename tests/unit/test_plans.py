"""Routing: each action goes to the system that really owns the account."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.approval import Refused
from bot.domain.models import (
    Alert,
    AlertSource,
    Case,
    CaseStatus,
    IdentityFacts,
    IdentityRef,
    LinkedAccount,
    Provider,
    ResponseAction,
    Severity,
)
from bot.domain.plans import Step, offered_actions, plan

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
USER = IdentityRef(object_id="u-1", upn="adele@contoso.com", display_name="Adele Vance")
AD = LinkedAccount(
    identity_id="mdi-1",
    identifier="S-1-5-21-1",
    provider=Provider.ACTIVE_DIRECTORY,
    actions=frozenset({"disable", "enable", "forcePasswordReset"}),
)
OKTA = LinkedAccount(
    identity_id="mdi-1",
    identifier="00u1okta",
    provider=Provider.OKTA,
    actions=frozenset({"disable", "revokeAllSessions"}),
)


def _case(
    facts: IdentityFacts, *, status: CaseStatus = CaseStatus.OPEN, identity: IdentityRef = USER
) -> Case:
    alert = Alert(
        id="a1",
        source=AlertSource.DEFENDER_FOR_IDENTITY,
        title="t",
        severity=Severity.HIGH,
        status="new",
        created_at=NOW,
        updated_at=NOW,
        target=identity,
    )
    return Case(id="c1", identity=identity, alerts=(alert,), opened_at=NOW, status=status, facts=facts)


def _ops(steps: tuple[Step, ...] | Refused) -> list[tuple[str, str]]:
    assert not isinstance(steps, Refused), steps
    return [(s.operation.value, s.defender_action or s.provider.value) for s in steps]


CLOUD = IdentityFacts()
SYNCED = IdentityFacts(synced=True, on_prem_sid="S-1-5-21-1", linked=(AD,))
SYNCED_UNKNOWN_TO_DEFENDER = IdentityFacts(synced=True, on_prem_sid="S-1-5-21-1")
WITH_OKTA = IdentityFacts(linked=(OKTA,))


@pytest.mark.parametrize(
    ("action", "facts", "expected"),
    [
        (ResponseAction.DISABLE_ACCOUNT, CLOUD, [("entra.disable", "entraID")]),
        (
            ResponseAction.DISABLE_ACCOUNT,
            SYNCED,
            [("defender.invokeAction", "disable"), ("entra.disable", "entraID")],
        ),
        (ResponseAction.DISABLE_ACCOUNT, SYNCED_UNKNOWN_TO_DEFENDER, [("entra.disable", "entraID")]),
        (
            ResponseAction.DISABLE_ACCOUNT,
            WITH_OKTA,
            [("entra.disable", "entraID"), ("defender.invokeAction", "disable")],
        ),
        (
            ResponseAction.ENABLE_ACCOUNT,
            SYNCED,
            [("defender.invokeAction", "enable"), ("entra.enable", "entraID")],
        ),
        (
            ResponseAction.REVOKE_SESSIONS,
            WITH_OKTA,
            [("entra.revokeSessions", "entraID"), ("defender.invokeAction", "revokeAllSessions")],
        ),
        (
            ResponseAction.FORCE_PASSWORD_CHANGE,
            CLOUD,
            [("entra.resetPassword", "entraID"), ("entra.revokeSessions", "entraID")],
        ),
        (ResponseAction.FORCE_PASSWORD_CHANGE, SYNCED, [("defender.invokeAction", "forcePasswordReset")]),
        (ResponseAction.CONFIRM_COMPROMISED, CLOUD, [("risk.confirmCompromised", "entraID")]),
        (ResponseAction.DISMISS_RISK, CLOUD, [("risk.dismiss", "entraID")]),
    ],
)
def test_routing(action: ResponseAction, facts: IdentityFacts, expected: list[tuple[str, str]]) -> None:
    assert _ops(plan(action, _case(facts))) == expected


def test_defender_steps_name_the_account_and_provider() -> None:
    steps = plan(ResponseAction.DISABLE_ACCOUNT, _case(SYNCED))
    assert not isinstance(steps, Refused)
    assert steps[0].account == AD and steps[0].provider is Provider.ACTIVE_DIRECTORY
    assert steps[0].label == "Disable in Active Directory (Defender for Identity)"


def test_a_synced_password_unknown_to_defender_is_refused_with_the_reason() -> None:
    outcome = plan(ResponseAction.FORCE_PASSWORD_CHANGE, _case(SYNCED_UNKNOWN_TO_DEFENDER))
    assert isinstance(outcome, Refused)
    assert "mastered in on-premises Active Directory" in outcome.reason


def test_identity_protection_needs_an_object_id() -> None:
    upn_only = IdentityRef(upn="adele@contoso.com")
    outcome = plan(ResponseAction.CONFIRM_COMPROMISED, _case(CLOUD, identity=upn_only))
    assert isinstance(outcome, Refused)


def test_unsupported_defender_actions_are_not_planned() -> None:
    no_reset = AD.model_copy(update={"actions": frozenset({"disable"})})
    outcome = plan(
        ResponseAction.FORCE_PASSWORD_CHANGE, _case(SYNCED.model_copy(update={"linked": (no_reset,)}))
    )
    assert isinstance(outcome, Refused)


@pytest.mark.parametrize(
    ("status", "risk", "protected", "expected"),
    [
        (
            CaseStatus.OPEN,
            "atRisk",
            False,
            [
                "disableAccount",
                "revokeSessions",
                "forcePasswordChange",
                "confirmCompromised",
                "confirmSafe",
                "dismissRisk",
            ],
        ),
        (
            CaseStatus.OPEN,
            "none",
            False,
            ["disableAccount", "revokeSessions", "forcePasswordChange", "confirmCompromised"],
        ),
        (
            CaseStatus.CONTAINED,
            "confirmedCompromised",
            False,
            ["enableAccount", "revokeSessions", "forcePasswordChange"],
        ),
        (CaseStatus.OPEN, "atRisk", True, []),
    ],
)
def test_the_card_offers_only_what_applies(
    status: CaseStatus, risk: str, protected: bool, expected: list[str]
) -> None:
    case = _case(CLOUD.model_copy(update={"risk_state": risk}), status=status).model_copy(
        update={"protected": protected}
    )
    assert [a.value for a in offered_actions(case)] == expected
