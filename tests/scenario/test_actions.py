"""Every response action through the real app, routed to the system that owns the account,
verified by reading back, reported in the thread with Action Center ids, written back to the
alerts; and every injected Graph fault retried or explained, never run twice."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from bot.domain.models import CaseStatus
from bot.web.app import STORE
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, SECOND_RESPONDER, Clock, write_policy
from tests.scenario.test_approvals import Channel, card_text, verbs
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness
from tests.support.timing import until

ALEX = RESPONDER
ADELE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"  # synced from on-premises AD
LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"  # cloud-only, at risk
MEGAN = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a02"  # cloud-only, also in Okta
SID = "S-1-5-21-2718434511-2385740213-3112547860-1104"
# The audit chain's key, as a deployment configures it (a secret like the others).
AUDIT_KEY = "audit-hmac-key-of-the-actions-tests-7f3c9a"

ACTIONS_SCENARIO: dict[str, Any] = {
    "users": [
        {
            "id": ADELE,
            "userPrincipalName": "adele.vance@contoso.com",
            "displayName": "Adele Vance",
            "onPremisesSyncEnabled": True,
            "onPremisesSecurityIdentifier": SID,
            "onPremisesSamAccountName": "adelev",
            "onPremisesDomainName": "corp.contoso.com",
        },
        {"id": LEE, "userPrincipalName": "lee.gu@contoso.com", "displayName": "Lee Gu"},
        {"id": MEGAN, "userPrincipalName": "megan.bowen@contoso.com", "displayName": "Megan Bowen"},
        {"id": ALEX["id"], "userPrincipalName": "alex.wilber@contoso.com", "displayName": "Alex Wilber"},
        {
            "id": SECOND_RESPONDER["id"],
            "userPrincipalName": "megan.admin@contoso.com",
            "displayName": "Megan Admin",
        },
    ],
    "alerts": [
        {
            "user": "adele.vance@contoso.com",
            "serviceSource": "microsoftDefenderForIdentity",
            "title": "Suspected identity theft (pass-the-ticket)",
            "severity": "high",
            "minutes_ago": 40,
        },
        {
            "user": "lee.gu@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Leaked credentials",
            "severity": "high",
            "minutes_ago": 30,
        },
        {
            "user": "megan.bowen@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Unfamiliar sign-in properties",
            "severity": "medium",
            "minutes_ago": 20,
        },
    ],
    "riskyUsers": [
        {"user": "lee.gu@contoso.com", "riskLevel": "high", "minutes_ago": 30},
        {"user": "megan.bowen@contoso.com", "riskLevel": "medium", "minutes_ago": 20},
    ],
    "identityAccounts": [
        {
            "user": "megan.bowen@contoso.com",
            "accounts": [{"identityProvider": "okta", "identifier": "00u8kq2rbsHZ4fMeg5d7"}],
        }
    ],
}


@pytest.fixture
async def tenant(tmp_path: Path, clock: Clock) -> AsyncIterator[SandboxTenant]:
    sandbox = SandboxTenant(ACTIONS_SCENARIO, cert_dir=tmp_path / "tenant", clock=clock)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == [], "the bot broke the Graph contract"


@pytest.fixture
def graph_timeout() -> float:
    """The bot's Graph timeout: the default, so that no request depends on the machine's speed.

    A test of a timed-out request parametrizes a short one, shorter than the fault's delay.
    """
    return Settings.model_fields["graph_timeout_seconds"].default


@pytest.fixture
async def channel(
    make_settings: Callable[..., Settings],
    clock: Clock,
    tenant: SandboxTenant,
    connector: RecordingConnector,
    tmp_path: Path,
    graph_timeout: float,
) -> AsyncIterator[Channel]:
    policy = write_policy(tmp_path / "actions-policy.yaml", blast_radius_per_hour=50)
    settings = make_settings(
        policy_file=str(policy), graph_timeout_seconds=graph_timeout, audit_hmac_key=AUDIT_KEY
    )
    harness = BotHarness(settings, clock)
    await harness.start()
    opened = Channel(harness, connector, tenant)
    await opened.open()
    yield opened
    await harness.stop()


def calls(tenant: SandboxTenant, method: str, fragment: str) -> list[Any]:
    return [r for r in tenant.requests if r.method == method and fragment in r.path]


def result_replies(channel: Channel, name: str) -> list[str]:
    return [
        t for t in channel.thread(name) if " for " in t and ("Result:" in t or "Verification update" in t)
    ]


async def act(channel: Channel, name: str, verb: str, reason: str = "containment") -> dict[str, Any]:
    return await channel.click(name, ALEX, verb, reason=reason)


async def test_a_synced_user_is_disabled_on_premises_through_defender(
    channel: Channel, tenant: SandboxTenant
) -> None:
    card = channel.current_card("Adele Vance")
    assert "synced from on-premises AD" in card_text(card)
    await act(channel, "Adele Vance", "disableAccount")
    invoked = calls(tenant, "POST", "/invokeAction")
    assert [(r.json["action"], r.json["identityProvider"]) for r in invoked] == [
        ("disable", "activeDirectory")
    ]
    assert tenant.user(ADELE)["accountEnabled"] is False
    tenant.run_directory_sync()
    assert tenant.user(ADELE)["accountEnabled"] is False, "disabled on-premises: the sync keeps it disabled"
    reply = result_replies(channel, "Adele Vance")[-1]
    assert "**Disable account succeeded**" in reply
    assert "Disable in Active Directory (Defender for Identity): ok, verified" in reply
    assert "Disable in Entra ID: ok, verified" in reply
    correlation = next(w for w in reply.split() if w.count("-") == 4 and "Defender correlation id" in reply)
    assert correlation
    assert (
        "Defender correlation id" in reply
        and "[Action Center history](https://security.microsoft.com/action-center/history)" in reply
    )
    comments = [
        c["comment"] for a in tenant.alerts() if "Adele" in json.dumps(a) for c in a.get("comments") or []
    ]
    assert any(
        "remediation-bot: Disable account on Adele Vance" in c and "Alex Wilber" in c for c in comments
    )


async def test_a_cloud_only_user_is_disabled_in_entra_only(channel: Channel, tenant: SandboxTenant) -> None:
    await act(channel, "Lee Gu", "disableAccount")
    assert calls(tenant, "POST", "/invokeAction") == []
    assert [r.json for r in calls(tenant, "PATCH", LEE)] == [{"accountEnabled": False}]
    assert (
        "Disable in Entra ID: ok, verified — accountEnabled = false" in result_replies(channel, "Lee Gu")[-1]
    )


async def test_okta_accounts_are_disabled_through_defender_too(
    channel: Channel, tenant: SandboxTenant
) -> None:
    await act(channel, "Megan Bowen", "disableAccount")
    invoked = calls(tenant, "POST", "/invokeAction")
    assert [(r.json["action"], r.json["identityProvider"]) for r in invoked] == [("disable", "okta")]
    reply = result_replies(channel, "Megan Bowen")[-1]
    assert "Disable in Okta (Defender for Identity): ok" in reply


async def test_revoke_sessions_is_verified_by_the_sessions_timestamp(
    channel: Channel, tenant: SandboxTenant
) -> None:
    await act(channel, "Lee Gu", "revokeSessions")
    assert len(calls(tenant, "POST", f"/users/{LEE}/revokeSignInSessions")) == 1
    reply = result_replies(channel, "Lee Gu")[-1]
    assert "**Revoke sessions succeeded**" in reply and "signInSessionsValidFromDateTime" in reply


async def test_a_forced_password_change_never_leaks_the_password(
    channel: Channel,
    tenant: SandboxTenant,
    connector: RecordingConnector,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    with caplog.at_level(logging.DEBUG):
        await act(channel, "Lee Gu", "forcePasswordChange")
    patch = calls(tenant, "PATCH", LEE)[-1].json
    assert patch["passwordProfile"]["forceChangePasswordNextSignIn"] is True
    assert len(calls(tenant, "POST", f"/users/{LEE}/revokeSignInSessions")) == 1, (
        "sessions are revoked with it"
    )
    password = tenant.password_of(LEE)
    assert password and len(password) >= 16
    reply = result_replies(channel, "Lee Gu")[-1]
    assert "**Force password change succeeded**" in reply and "lastPasswordChangeDateTime" in reply
    secrets = [password, *tenant.issued_tokens(), tenant.client_secret, AUDIT_KEY]
    assert "Audit checkpoint #" in reply, "the reply carries a checkpoint made with the key"
    audit = await channel.bot.service.history("lee.gu@contoso.com")
    places = {
        "logs": caplog.text,
        "Teams (cards, replies)": json.dumps([c.body for c in connector.calls]),
        "store": await asyncio.to_thread(_store_bytes, tmp_path),
        "audit": json.dumps([e.model_dump(mode="json") for e in audit]),
        "sandbox records": json.dumps([r.json for r in tenant.requests], default=str),
    }
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret appeared in {where}"


async def test_a_synced_password_is_reset_on_premises(channel: Channel, tenant: SandboxTenant) -> None:
    await act(channel, "Adele Vance", "forcePasswordChange")
    invoked = calls(tenant, "POST", "/invokeAction")
    assert [(r.json["action"], r.json["identityProvider"]) for r in invoked] == [
        ("forcePasswordReset", "activeDirectory")
    ]
    assert calls(tenant, "PATCH", ADELE) == [], "a synced password is never set in the cloud"
    reply = result_replies(channel, "Adele Vance")[-1]
    assert "**Force password change submitted**" in reply, "no read-back exists, so it is not called verified"
    assert "see the Action Center" in reply and "Defender correlation id" in reply


async def test_confirm_compromised_then_dismiss_on_another_user(
    channel: Channel, tenant: SandboxTenant
) -> None:
    assert "dismissRisk" in verbs(channel.current_card("Lee Gu"))
    await act(channel, "Lee Gu", "confirmCompromised")
    assert tenant.risky_user(LEE)["riskState"] == "confirmedCompromised"
    assert "riskState = confirmedCompromised" in result_replies(channel, "Lee Gu")[-1]
    assert "confirmCompromised" not in verbs(channel.current_card("Lee Gu"))
    await act(channel, "Megan Bowen", "dismissRisk", reason="Known VPN egress; false positive")
    assert tenant.risky_user(MEGAN)["riskState"] == "dismissed"
    assert "**Dismiss risk succeeded**" in result_replies(channel, "Megan Bowen")[-1]


async def test_re_enable_is_the_undo(channel: Channel, tenant: SandboxTenant) -> None:
    await act(channel, "Lee Gu", "disableAccount")
    assert "Contained" in card_text(channel.current_card("Lee Gu"))
    assert "enableAccount" in verbs(channel.current_card("Lee Gu"))
    await act(channel, "Lee Gu", "enableAccount", reason="False positive confirmed with the user")
    assert tenant.user(LEE)["accountEnabled"] is True
    card = channel.current_card("Lee Gu")
    assert "disableAccount" in verbs(card) and "Open" in card_text(card)


async def test_a_cloud_disable_undone_by_directory_sync_is_caught(
    channel: Channel, tenant: SandboxTenant, clock: Clock
) -> None:
    # Defender for Identity is down, so only the cloud-side disable goes through.
    tenant.inject_fault("POST", "/invokeAction$", status=503, times=10)
    await act(channel, "Adele Vance", "disableAccount")
    first = result_replies(channel, "Adele Vance")[-1]
    assert "Disable account FAILED" in first and "Disable in Entra ID: ok, pending verification" in first
    tenant.clear_faults()
    tenant.run_directory_sync()
    assert tenant.user(ADELE)["accountEnabled"] is True, "the sync re-enabled her"
    clock.now += timedelta(minutes=3)
    await channel.bot.service.sweep()
    update = result_replies(channel, "Adele Vance")[-1]
    assert update.startswith("Verification update:")
    assert "NOT in effect" in update and "accountEnabled = true" in update


async def test_throttling_and_outages_are_retried_and_run_once(
    channel: Channel, tenant: SandboxTenant
) -> None:
    tenant.inject_fault("PATCH", f"/users/{LEE}$", status=429, headers={"Retry-After": "0.2"}, times=1)
    tenant.inject_fault("PATCH", f"/users/{LEE}$", status=503, times=1)
    await act(channel, "Lee Gu", "disableAccount")
    answered = [r.status for r in calls(tenant, "PATCH", LEE)]
    assert answered == [429, 503, 204], "retried after the throttle and the outage, applied once"
    assert "**Disable account succeeded**" in result_replies(channel, "Lee Gu")[-1]


async def test_identity_protection_429_without_retry_after_backs_off(
    channel: Channel, tenant: SandboxTenant
) -> None:
    tenant.inject_fault("POST", "/riskyUsers/confirmCompromised$", status=429, times=1)
    await act(channel, "Lee Gu", "confirmCompromised")
    assert [r.status for r in calls(tenant, "POST", "confirmCompromised")] == [429, 204]
    assert tenant.risky_user(LEE)["riskState"] == "confirmedCompromised"


async def test_a_missing_permission_is_named(channel: Channel, tenant: SandboxTenant) -> None:
    tenant.inject_fault("POST", "/revokeSignInSessions$", status=403, times=1)
    await act(channel, "Lee Gu", "revokeSessions")
    reply = result_replies(channel, "Lee Gu")[-1]
    assert "**Revoke sessions FAILED**" in reply
    assert "needs the application permission User.RevokeSessions.All" in reply
    assert "Retry revoke sessions" in card_text(channel.current_card("Lee Gu"))


async def test_a_refused_password_reset_names_permission_and_role(
    channel: Channel, tenant: SandboxTenant
) -> None:
    tenant.inject_fault("PATCH", f"/users/{LEE}$", status=403, times=1)
    await act(channel, "Lee Gu", "forcePasswordChange")
    reply = result_replies(channel, "Lee Gu")[-1]
    assert "User-PasswordProfile.ReadWrite.All" in reply
    assert "Privileged Authentication Administrator" in reply
    assert tenant.password_of(LEE) is None


async def test_a_deleted_account_is_explained(channel: Channel, tenant: SandboxTenant) -> None:
    tenant.inject_fault("PATCH", f"/users/{LEE}$", status=404, times=1)
    await act(channel, "Lee Gu", "disableAccount")
    assert "the account no longer exists (404)" in result_replies(channel, "Lee Gu")[-1]


@pytest.mark.parametrize("graph_timeout", [1.0])
async def test_a_timed_out_post_is_read_back_not_resent(channel: Channel, tenant: SandboxTenant) -> None:
    # Graph applies the revoke but answers after the bot stopped waiting.
    tenant.inject_fault("POST", "/revokeSignInSessions$", status=None, delay=2.0, times=1)
    # A second send would get Graph's other success answer (204) at once: the late answer is
    # the 200, and by the time it is recorded a resend would have been recorded too.
    tenant.inject_fault("POST", "/revokeSignInSessions$", status=204, times=1)
    await act(channel, "Lee Gu", "revokeSessions")
    # The sandbox records a request once it has answered it.
    await until(
        lambda: [r for r in calls(tenant, "POST", "/revokeSignInSessions") if r.status == 200],
        "the late answer",
    )
    assert len(calls(tenant, "POST", "/revokeSignInSessions")) == 1, "never sent twice"
    reply = result_replies(channel, "Lee Gu")[-1]
    assert "**Revoke sessions succeeded**" in reply and "reading back shows it took effect" in reply


async def test_an_unknown_outcome_that_did_not_apply_fails_and_can_be_retried(
    channel: Channel, tenant: SandboxTenant
) -> None:
    tenant.inject_fault("POST", "/revokeSignInSessions$", status=504, times=1)
    await act(channel, "Lee Gu", "revokeSessions")
    assert len(calls(tenant, "POST", "/revokeSignInSessions")) == 1, "a 504 on a POST is not retried blindly"
    assert "it was not sent again" in result_replies(channel, "Lee Gu")[-1]
    await channel.click("Lee Gu", SECOND_RESPONDER, "retry")
    assert len(calls(tenant, "POST", "/revokeSignInSessions")) == 2
    assert "**Revoke sessions succeeded**" in result_replies(channel, "Lee Gu")[-1]


async def test_success_is_never_reported_without_a_read_back(channel: Channel, tenant: SandboxTenant) -> None:
    tenant.inject_fault("GET", f"/users/{LEE}$", status=503, times=20)
    await act(channel, "Lee Gu", "disableAccount")
    reply = result_replies(channel, "Lee Gu")[-1]
    assert "succeeded" not in reply.split("\n")[0]
    assert "pending verification" in reply


def _store_bytes(folder: Path) -> str:
    """The SQLite database and its WAL, as text to search."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("bot.db*"))).decode("latin-1")


async def test_closed_cases_leave_nothing_behind_in_memory(channel: Channel, tenant: SandboxTenant) -> None:
    """What the bot keeps in memory per case (card locks, last update times, deferred updates,
    queued escalation notes) is dropped once the case is closed: it does not grow with every
    case the bot has ever seen."""
    names = ("Adele Vance", "Lee Gu", "Megan Bowen")
    for name in names:
        await act(channel, name, "disableAccount")
    await channel.bot.service.drain()
    closed = {c.id for c in await channel.bot.app[STORE].list_cases() if c.status is CaseStatus.CONTAINED}
    assert len(closed) == len(names)
    publisher = channel.bot.service.publisher
    kept = {
        "locks": set(publisher._case_locks),
        "last updates": set(publisher._last_update),
        "deferred": set(publisher._deferred),
        "escalations": set(publisher._escalations),
    }
    assert {what: ids & closed for what, ids in kept.items()} == {what: set() for what in kept}
