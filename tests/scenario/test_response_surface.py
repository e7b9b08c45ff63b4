"""Microsoft's identity response surface through the real app: confirm safe, every Defender for
Identity action on the providers that support it, one request over a person's linked accounts,
automatic attack disruption kept or rolled back, and write-back only to alerts that exist."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, SECOND_RESPONDER, Clock, write_policy
from tests.scenario.test_actions import ACTIONS_SCENARIO
from tests.scenario.test_approvals import Channel, card_text, verbs
from tests.scenario.test_intake import SECRET as PUSH_SECRET
from tests.scenario.test_intake import push
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, card_action

ALEX, MEGAN_ADMIN = RESPONDER, SECOND_RESPONDER
ADELE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"  # synced from AD, also in Okta: three linked accounts
LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"  # cloud-only, at high risk
MEGAN = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a02"  # cloud-only, also in Okta
GRADY = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a07"  # synced, disabled by automatic attack disruption
NESTOR = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a08"  # flagged by Identity Protection only: no alert
PRADEEP = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a09"  # named only by a pushed alert in the minimal form
ADELE_SID = "S-1-5-21-2718434511-2385740213-3112547860-1104"
GRADY_SID = "S-1-5-21-2718434511-2385740213-3112547860-1188"


def _synced(object_id: str, upn: str, name: str, sid: str, sam: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": object_id,
        "userPrincipalName": upn,
        "displayName": name,
        "onPremisesSyncEnabled": True,
        "onPremisesSecurityIdentifier": sid,
        "onPremisesSamAccountName": sam,
        "onPremisesDomainName": "corp.contoso.com",
        **extra,
    }


SCENARIO: dict[str, Any] = {
    "users": [
        _synced(ADELE, "adele.vance@contoso.com", "Adele Vance", ADELE_SID, "adelev"),
        {"id": LEE, "userPrincipalName": "lee.gu@contoso.com", "displayName": "Lee Gu"},
        {"id": MEGAN, "userPrincipalName": "megan.bowen@contoso.com", "displayName": "Megan Bowen"},
        _synced(GRADY, "grady.archie@contoso.com", "Grady Archie", GRADY_SID, "gradya", accountEnabled=False),
        {"id": NESTOR, "userPrincipalName": "nestor.wilke@contoso.com", "displayName": "Nestor Wilke"},
        {"id": PRADEEP, "userPrincipalName": "pradeep.gupta@contoso.com", "displayName": "Pradeep Gupta"},
        {"id": ALEX["id"], "userPrincipalName": "alex.wilber@contoso.com", "displayName": "Alex Wilber"},
        {
            "id": MEGAN_ADMIN["id"],
            "userPrincipalName": "megan.admin@contoso.com",
            "displayName": "Megan Admin",
        },
    ],
    # The people of the action tests, as their alerts and risk read there, plus the new ones.
    "alerts": [
        *ACTIONS_SCENARIO["alerts"],
        {
            "user": "grady.archie@contoso.com",
            "serviceSource": "microsoftDefenderForIdentity",
            "title": "Suspected ransomware activity (remote encryption)",
            "severity": "high",
            "minutes_ago": 15,
            "updated_minutes_ago": 14,
            "systemTags": ["Attack Disruption", "Ransomware"],
        },
    ],
    "riskyUsers": [
        *ACTIONS_SCENARIO["riskyUsers"],
        {"user": "nestor.wilke@contoso.com", "riskLevel": "high", "minutes_ago": 10},
    ],
    "identityAccounts": [
        {
            "user": "megan.bowen@contoso.com",
            "accounts": [{"identityProvider": "okta", "identifier": "00u8kq2rbsHZ4fMeg5d7"}],
        },
        {
            "user": "adele.vance@contoso.com",
            "accounts": [{"identityProvider": "okta", "identifier": "00u1adeleOkta9"}],
        },
    ],
}


@pytest.fixture
async def tenant(tmp_path: Path, clock: Clock) -> AsyncIterator[SandboxTenant]:
    sandbox = SandboxTenant(SCENARIO, cert_dir=tmp_path / "tenant", clock=clock)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == [], "the bot broke the Graph contract"


@pytest.fixture
async def channel(
    make_settings: Callable[..., Settings],
    clock: Clock,
    tenant: SandboxTenant,
    connector: RecordingConnector,
    tmp_path: Path,
) -> AsyncIterator[Channel]:
    policy = write_policy(tmp_path / "policy.yaml", blast_radius_per_hour=50)
    harness = BotHarness(make_settings(policy_file=str(policy), push_shared_secret=PUSH_SECRET), clock)
    await harness.start()
    opened = Channel(harness, connector, tenant)
    await opened.open()
    yield opened
    await harness.stop()


def invoked(tenant: SandboxTenant) -> list[tuple[str, str]]:
    return [
        (r.json["action"], r.json["identityProvider"])
        for r in tenant.requests
        if r.method == "POST" and r.path.endswith("/invokeAction")
    ]


def calls(tenant: SandboxTenant, method: str, fragment: str) -> list[Any]:
    return [r for r in tenant.requests if r.method == method and fragment in r.path]


def last_result(channel: Channel, name: str) -> str:
    return [t for t in channel.thread(name) if " for " in t and "Result:" in t][-1]


async def act(
    channel: Channel, name: str, verb: str, *, person: dict[str, str] = ALEX, **inputs: str
) -> dict[str, Any]:
    data = dict(card_action(channel.current_card(name), verb)["data"])
    data.update(inputs)
    return await channel.click(name, person, verb, data=data, reason=f"{verb}: containment")


# -- confirm safe -------------------------------------------------------------------------------


async def test_confirm_safe_is_its_own_action_beside_dismiss_and_is_read_back(
    channel: Channel, tenant: SandboxTenant
) -> None:
    card = channel.current_card("Lee Gu")
    assert {"confirmSafe", "dismissRisk"} <= verbs(card)
    assert "Confirm safe tells Entra ID Protection this was a false positive" in card_text(card)
    await act(channel, "Lee Gu", "confirmSafe")
    assert [r.json for r in calls(tenant, "POST", "/riskyUsers/confirmSafe")] == [{"userIds": [LEE]}]
    assert calls(tenant, "POST", "/riskyUsers/dismiss") == []
    assert tenant.risky_user(LEE)["riskState"] == "confirmedSafe"
    reply = last_result(channel, "Lee Gu")
    assert "**Confirm safe succeeded**" in reply
    assert (
        "Confirm safe in Entra ID Protection: ok, verified — riskState = confirmedSafe, riskLevel = none"
        in reply
    )
    assert not {"confirmSafe", "dismissRisk"} & verbs(channel.current_card("Lee Gu")), "no longer at risk"
    history = [e.kind for e in await channel.bot.service.history("lee.gu@contoso.com")]
    assert "request.opened" in history and "action.succeeded" in history


async def test_a_confirm_safe_that_does_not_clear_the_risk_is_not_called_verified(
    channel: Channel, tenant: SandboxTenant
) -> None:
    # Graph answers 204, but the user reads back at risk (the request never reached the model).
    tenant.inject_fault("POST", "/riskyUsers/confirmSafe$", status=204, times=1)
    await act(channel, "Lee Gu", "confirmSafe")
    reply = last_result(channel, "Lee Gu")
    assert "**Confirm safe succeeded**" not in reply
    assert "riskState = atRisk" in reply


# -- Defender for Identity actions, per provider ------------------------------------------------


async def test_require_sign_in_again_runs_on_the_entra_account_through_defender(
    channel: Channel, tenant: SandboxTenant
) -> None:
    before = tenant.user(LEE)["signInSessionsValidFromDateTime"]
    await act(channel, "Lee Gu", "requireSignInAgain")
    assert invoked(tenant) == [("requireUserToSignInAgain", "entraID")]
    assert tenant.user(LEE)["signInSessionsValidFromDateTime"] != before
    reply = last_result(channel, "Lee Gu")
    assert "**Require sign-in again succeeded**" in reply
    assert "Require sign-in again in Entra ID (Defender for Identity): ok, verified" in reply
    assert "Defender correlation id" in reply


async def test_mark_compromised_runs_on_the_entra_account_and_reads_the_risk_back(
    channel: Channel, tenant: SandboxTenant
) -> None:
    await act(channel, "Lee Gu", "markCompromised")
    assert invoked(tenant) == [("markUserAsCompromised", "entraID")]
    assert tenant.risky_user(LEE)["riskState"] == "confirmedCompromised"
    reply = last_result(channel, "Lee Gu")
    assert "Mark as compromised in Entra ID (Defender for Identity): ok, verified" in reply
    assert "riskState = confirmedCompromised" in reply and "Defender correlation id" in reply
    assert not {"markCompromised", "confirmCompromised"} & verbs(channel.current_card("Lee Gu"))


async def test_okta_gets_the_actions_okta_supports_and_no_others(
    channel: Channel, tenant: SandboxTenant
) -> None:
    await act(channel, "Megan Bowen", "revokeSessions")
    assert invoked(tenant) == [("revokeAllSessions", "okta")]
    assert len(calls(tenant, "POST", f"/users/{MEGAN}/revokeSignInSessions")) == 1
    reply = last_result(channel, "Megan Bowen")
    assert (
        "Revoke all sessions in Okta (Defender for Identity): ok, submitted (no state to read back" in reply
    )
    # Okta has no password reset in Defender for Identity: a cloud user's password is Entra's.
    await act(channel, "Megan Bowen", "forcePasswordChange")
    assert ("forcePasswordReset", "okta") not in invoked(tenant)
    await act(channel, "Megan Bowen", "disableAccount")
    await act(channel, "Megan Bowen", "enableAccount")
    assert invoked(tenant)[-2:] == [("disable", "okta"), ("enable", "okta")]
    assert tenant.provider_account(MEGAN, "okta").enabled is True


async def test_active_directory_gets_disable_enable_and_password_reset(
    channel: Channel, tenant: SandboxTenant
) -> None:
    await act(channel, "Adele Vance", "forcePasswordChange")
    assert invoked(tenant) == [("forcePasswordReset", "activeDirectory")]
    assert tenant.provider_account(ADELE, "activeDirectory").must_change_password is True
    await act(channel, "Adele Vance", "disableAccount")
    await act(channel, "Adele Vance", "enableAccount")
    assert ("disable", "activeDirectory") in invoked(tenant) and ("enable", "activeDirectory") in invoked(
        tenant
    )
    assert tenant.provider_account(ADELE, "activeDirectory").enabled is True
    assert "Enable in Active Directory (Defender for Identity): ok, verified" in last_result(
        channel, "Adele Vance"
    )


# -- linked accounts ----------------------------------------------------------------------------


async def test_the_card_shows_every_linked_account_with_provider_and_state(channel: Channel) -> None:
    text = card_text(channel.current_card("Adele Vance"))
    assert "Linked accounts (Defender for Identity)" in text
    for provider in ("Active Directory", "Entra ID", "Okta"):
        assert provider in text
    assert "adele.vance@contoso.com · enabled" in text and "00u1adeleOkta9 · state not shown by Graph" in text


async def test_one_request_acts_on_every_linked_account_and_one_failing_step_hides_no_other(
    channel: Channel, tenant: SandboxTenant
) -> None:
    # The first Defender call (the Active Directory disable) fails; Entra ID and Okta go ahead.
    tenant.inject_fault("POST", "/invokeAction$", status=400, times=1)
    await act(channel, "Adele Vance", "disableAccount")
    assert invoked(tenant) == [("disable", "activeDirectory"), ("disable", "okta")]
    reply = last_result(channel, "Adele Vance")
    assert "**Disable account FAILED**" in reply
    assert "Disable in Active Directory (Defender for Identity): failed" in reply
    assert "Disable in Entra ID: ok" in reply
    assert "Disable in Okta (Defender for Identity): ok, submitted" in reply
    # The retry sends only what did not take effect: the Okta step keeps its idempotency key.
    await channel.click("Adele Vance", MEGAN_ADMIN, "retry")
    assert invoked(tenant) == [
        ("disable", "activeDirectory"),
        ("disable", "okta"),
        ("disable", "activeDirectory"),
    ]
    retried = last_result(channel, "Adele Vance")
    assert "Disable in Active Directory (Defender for Identity): ok, verified" in retried
    assert "Done in an earlier attempt (same idempotency key); not sent again" in retried
    assert tenant.provider_account(ADELE, "activeDirectory").enabled is False


async def test_a_responder_can_pick_the_accounts_to_act_on(channel: Channel, tenant: SandboxTenant) -> None:
    card = channel.current_card("Adele Vance")
    assert "accounts" in card_text_inputs(card)
    await act(channel, "Adele Vance", "disableAccount", accounts="activeDirectory,entraID")
    assert invoked(tenant) == [("disable", "activeDirectory")], "Okta was not picked"
    assert tenant.provider_account(ADELE, "okta").enabled is True
    assert "Entra ID, Active Directory" in card_text(channel.current_card("Adele Vance")), (
        "the card says which"
    )


async def test_a_pick_that_names_no_account_of_the_person_is_refused(
    channel: Channel, tenant: SandboxTenant
) -> None:
    answer = await act(channel, "Lee Gu", "disableAccount", accounts="okta")
    assert "not an account of this person" in card_text(answer_card(answer))
    assert calls(tenant, "PATCH", LEE) == [] and invoked(tenant) == []


# -- automatic attack disruption ----------------------------------------------------------------


async def test_a_disrupted_account_is_kept_contained_then_rolled_back_by_two_approvers(
    channel: Channel, tenant: SandboxTenant
) -> None:
    card = channel.current_card("Grady Archie")
    text = card_text(card)
    assert "Already contained automatically at" in text and "automatic attack disruption" in text
    assert verbs(card) == {"keepContained", "enableAccount"}
    assert "Roll back (re-enable)" in text
    assert "Suspicious account enablement after disruption" in text

    await act(channel, "Grady Archie", "keepContained", addRevokeSessions="true", addPasswordChange="false")
    assert calls(tenant, "PATCH", GRADY) == [], "keeping it contained changes nothing"
    assert len(calls(tenant, "POST", f"/users/{GRADY}/revokeSignInSessions")) == 1
    reply = last_result(channel, "Grady Archie")
    assert "**Keep contained succeeded**" in reply
    assert "Check the Entra ID account is disabled: ok, verified — accountEnabled = false" in reply
    assert "Check the Active Directory account is disabled: ok, verified" in reply
    assert "Kept contained by a responder at" in card_text(channel.current_card("Grady Archie"))

    # Rolling back: one approver is never enough, whatever the policy says for re-enabling.
    await act(channel, "Grady Archie", "enableAccount")
    assert tenant.user(GRADY)["accountEnabled"] is False, "never re-enabled on one approval"
    assert "awaiting second approver" in card_text(channel.current_card("Grady Archie"))
    await channel.click("Grady Archie", MEGAN_ADMIN, "approve")
    assert invoked(tenant) == [("enable", "activeDirectory")]
    assert tenant.user(GRADY)["accountEnabled"] is True
    rolled = last_result(channel, "Grady Archie")
    assert "**Re-enable account succeeded**" in rolled and "Alex Wilber, Megan Bowen" in rolled


async def test_keep_contained_that_finds_the_account_enabled_says_so(
    channel: Channel, tenant: SandboxTenant
) -> None:
    # Re-enabled in Entra ID behind the bot's back, since the case opened.
    tenant.inject_fault("GET", f"/users/{GRADY}$", status=200, body={"id": GRADY, "accountEnabled": True})
    await act(channel, "Grady Archie", "keepContained")
    reply = last_result(channel, "Grady Archie")
    assert "**Keep contained FAILED**" in reply and "NOT in effect" in reply


# -- write-back only where an alert exists ------------------------------------------------------


async def test_no_comment_goes_to_an_alert_that_does_not_exist(
    channel: Channel, tenant: SandboxTenant
) -> None:
    assert "Nestor Wilke" in card_text(channel.current_card("Nestor Wilke"))
    status, _ = await push(
        channel.bot,
        {
            "id": "inc-42",
            "title": "Impossible travel",
            "severity": "high",
            "source": "sentinel",
            "user": {"userPrincipalName": "pradeep.gupta@contoso.com"},
        },
    )
    assert status == 202
    await channel.bot.service.drain()
    await act(channel, "Pradeep Gupta", "disableAccount")
    assert tenant.user(PRADEEP)["accountEnabled"] is False
    await act(channel, "Nestor Wilke", "disableAccount")
    await act(channel, "Lee Gu", "disableAccount")
    comments = calls(tenant, "POST", "/comments")
    assert comments, "the real alert got its comment"
    assert all("/security/alerts_v2/" in r.path for r in comments)
    assert not [r for r in comments if "riskyUser" in r.path or "push" in r.path]
    assert [r.status for r in comments] == [200] * len(comments), "no 404 from a made-up alert id"


def card_text_inputs(card: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("type", "")).startswith("Input.") and "id" in node:
                found.add(node["id"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card.get("body", []))
    return found


def answer_card(answer: dict[str, Any]) -> dict[str, Any]:
    card = answer.get("value")
    assert isinstance(card, dict)
    return card
