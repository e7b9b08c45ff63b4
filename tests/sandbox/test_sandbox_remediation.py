"""The sandbox's remediation state: identity accounts and their actions, directory sync, risk, alerts.

Driven over HTTPS with a raw client, so that each answer is checked as Graph would send it.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from devtools.sandbox import DEMO_SCENARIO, SandboxTenant, load_contract

from .helpers import Clock

ADELE = "adele.vance@contoso.com"
ADELE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"
ADELE_SID = "S-1-5-21-2718434511-2385740213-3112547860-1104"
MEGAN = "megan.bowen@contoso.com"
MEGAN_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a02"
LEE = "lee.gu@contoso.com"
LEE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
DIEGO_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a05"
ALEX_ID = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51"
PATRICK = "patrick.o'brien@contoso.com"
NOW = "2026-11-24T09:30:00.000000Z"
IDENTITIES = "/v1.0/security/identities/identityAccounts"


def _accounts(identity: dict[str, Any]) -> dict[str, str]:
    return {a["identityProvider"]: a["identifier"] for a in identity["accounts"]}


async def _invoke(
    graph: httpx.AsyncClient, upn: str, action: str, provider: str, tenant: SandboxTenant
) -> httpx.Response:
    identity = tenant.identity_account(upn)
    body = {
        "accountId": _accounts(identity).get(provider, "none"),
        "action": action,
        "identityProvider": provider,
    }
    return await graph.post(f"{IDENTITIES}/{identity['id']}/invokeAction", json=body)


async def _enabled(graph: httpx.AsyncClient, upn: str) -> bool:
    answer = await graph.get(f"/v1.0/users/{quote(upn, safe='@')}", params={"$select": "accountEnabled"})
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["accountEnabled"])


# -- identity accounts ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_user_is_an_identity_with_the_accounts_of_its_providers(tenant: SandboxTenant) -> None:
    adele = tenant.identity_account(ADELE)
    lee = tenant.identity_account(LEE)
    megan = tenant.identity_account(MEGAN)

    assert adele["@odata.type"] == "#microsoft.graph.security.user"
    assert adele["onPremisesSecurityIdentifier"] == ADELE_SID
    assert adele["domain"] == "corp.contoso.com"
    assert adele["cloudSecurityIdentifier"].startswith("S-1-12-1-")
    assert list(_accounts(adele)) == ["activeDirectory", "entraID"]
    assert uuid.UUID(_accounts(adele)["activeDirectory"])  # an objectGUID, as in the docs
    assert _accounts(adele)["entraID"] == ADELE_ID
    assert list(_accounts(lee)) == ["entraID"]
    assert lee["onPremisesSecurityIdentifier"] is None and lee["domain"] is None
    assert _accounts(megan)["okta"] == "00u8kq2rbsHZ4fMeg5d7"
    actions = {a["identityProvider"]: a["actions"] for a in megan["accounts"]}
    assert actions == {
        "activeDirectory": ["disable", "enable", "forcePasswordReset"],
        "entraID": [
            "disable",
            "enable",
            "revokeAllSessions",
            "requireUserToSignInAgain",
            "markUserAsCompromised",
        ],
        "okta": ["disable", "enable", "revokeAllSessions"],
    }
    assert tenant.identity_account(adele["id"]) == adele == tenant.identity_account(ADELE_ID)


@pytest.mark.asyncio
async def test_seeded_objects_use_only_contract_properties(tenant: SandboxTenant) -> None:
    contract = load_contract()
    identity_properties = contract.properties("microsoft.graph.security.user") | {"id", "@odata.type"}
    account_properties = contract.properties("microsoft.graph.security.account")
    detection_properties = contract.properties("microsoft.graph.riskDetection") | {"id"}
    location_properties = contract.properties("microsoft.graph.signInLocation")
    for upn in (ADELE, LEE, MEGAN, PATRICK):
        identity = tenant.identity_account(upn)
        assert set(identity) <= identity_properties
        for account in identity["accounts"]:
            assert set(account) <= account_properties
    detections = tenant.risk_detections()
    assert len(detections) == 7
    for detection in detections:
        assert set(detection) <= detection_properties
        assert detection["location"] is None or set(detection["location"]) <= location_properties


@pytest.mark.asyncio
async def test_list_identity_accounts_filters_select_and_pages(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    by_sid = await graph.get(IDENTITIES, params={"$filter": f"onPremisesSecurityIdentifier eq '{ADELE_SID}'"})
    by_upn = await graph.get(
        IDENTITIES, params={"$filter": "userPrincipalName eq 'patrick.o''brien@contoso.com'"}
    )
    selected = await graph.get(IDENTITIES, params={"$filter": "isEnabled eq true", "$select": "id,accounts"})
    first = await graph.get(IDENTITIES, params={"$top": "4"})

    assert [i["userPrincipalName"] for i in by_sid.json()["value"]] == [ADELE]
    assert [i["userPrincipalName"] for i in by_upn.json()["value"]] == [PATRICK]
    assert by_sid.json()["@odata.context"].endswith("$metadata#security/identities/identityAccounts")
    assert len(selected.json()["value"]) == 11  # all but Grady Archie, disabled by attack disruption
    assert set(selected.json()["value"][0]) == {"@odata.type", "id", "accounts"}
    seen = list(first.json()["value"])
    link = first.json().get("@odata.nextLink")
    while link:
        page = (await graph.get(link)).json()
        seen.extend(page["value"])
        link = page.get("@odata.nextLink")
    assert len({i["id"] for i in seen}) == 12


@pytest.mark.asyncio
async def test_filtering_inside_accounts_is_refused_not_ignored(graph: httpx.AsyncClient) -> None:
    answer = await graph.get(IDENTITIES, params={"$filter": "accounts/any(a: a/identifier eq 'x')"})

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"


@pytest.mark.asyncio
async def test_get_identity_account(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    identity = tenant.identity_account(ADELE)

    answer = await graph.get(f"{IDENTITIES}/{identity['id']}")
    selected = await graph.get(f"{IDENTITIES}/{identity['id']}", params={"$select": "isEnabled"})
    missing = await graph.get(f"{IDENTITIES}/{uuid.uuid4()}")

    body = answer.json()
    assert body.pop("@odata.context").endswith("$metadata#security/identities/identityAccounts/$entity")
    assert body == identity
    assert selected.json()["isEnabled"] is True and "accounts" not in selected.json()
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NotFound")


# -- invokeAction --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_invoke_action_answers_the_documented_schema_and_logs_the_action(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await _invoke(graph, ADELE, "disable", "activeDirectory", tenant)

    body = answer.json()
    assert answer.status_code == 200
    assert body.pop("@odata.context").endswith("$metadata#microsoft.graph.security.invokeActionResult")
    ad_id = _accounts(tenant.identity_account(ADELE))["activeDirectory"]
    assert body == {
        "accountId": ad_id,
        "action": "disable",
        "identityProvider": "activeDirectory",
        "correlationId": body["correlationId"],
    }
    assert uuid.UUID(body["correlationId"])
    assert tenant.identity_actions() == [
        {
            "correlationId": body["correlationId"],
            "identityAccountId": tenant.identity_account(ADELE)["id"],
            "accountId": ad_id,
            "identityProvider": "activeDirectory",
            "action": "disable",
            "createdDateTime": NOW,
        }
    ]
    second = await _invoke(graph, ADELE, "enable", "activeDirectory", tenant)
    assert second.json()["correlationId"] != body["correlationId"]


@pytest.mark.asyncio
async def test_ad_disable_reaches_entra_at_the_next_sync_and_stays(
    tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock
) -> None:
    await _invoke(graph, ADELE, "disable", "activeDirectory", tenant)

    assert tenant.identity_account(ADELE)["isEnabled"] is False
    assert tenant.provider_account(ADELE, "activeDirectory").enabled is False
    assert await _enabled(graph, ADELE) is True  # AD changed; Entra ID not yet

    clock.advance(minutes=30)
    tenant.run_directory_sync()
    assert await _enabled(graph, ADELE) is False
    assert tenant.user(ADELE)["onPremisesLastSyncDateTime"] == "2026-11-24T10:00:00.000000Z"

    # A cloud-side enable does not outlast the next sync either: AD masters the account.
    assert (await graph.patch(f"/v1.0/users/{ADELE_ID}", json={"accountEnabled": True})).status_code == 204
    tenant.run_directory_sync()
    assert await _enabled(graph, ADELE) is False

    await _invoke(graph, ADELE, "enable", "activeDirectory", tenant)
    tenant.run_directory_sync()
    assert await _enabled(graph, ADELE) is True


@pytest.mark.asyncio
async def test_a_cloud_side_disable_of_a_synced_user_flips_back_at_the_next_sync(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    await graph.patch(f"/v1.0/users/{ADELE_ID}", json={"accountEnabled": False})
    await _invoke(graph, PATRICK, "disable", "entraID", tenant)
    await graph.patch(f"/v1.0/users/{LEE_ID}", json={"accountEnabled": False})
    assert [await _enabled(graph, upn) for upn in (ADELE, PATRICK, LEE)] == [False, False, False]

    tenant.run_directory_sync()

    # Synced users are enabled again; the cloud-only user has no AD to sync from.
    assert [await _enabled(graph, upn) for upn in (ADELE, PATRICK, LEE)] == [True, True, False]
    assert tenant.identity_account(LEE)["isEnabled"] is False


@pytest.mark.asyncio
async def test_the_directory_syncs_by_itself_when_given_an_interval() -> None:
    clock = Clock()
    async with _tenant_and_client(clock, sync_interval=1800) as (tenant, graph):
        await graph.patch(f"/v1.0/users/{ADELE_ID}", json={"accountEnabled": False})
        clock.advance(minutes=29)
        assert await _enabled(graph, ADELE) is False
        clock.advance(minutes=2)
        assert await _enabled(graph, ADELE) is True
        assert tenant.user(ADELE)["onPremisesLastSyncDateTime"] == "2026-11-24T10:01:00.000000Z"


@pytest.mark.asyncio
async def test_entra_actions(tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock) -> None:
    clock.advance(minutes=5)

    revoked = await _invoke(graph, ALEX_ID, "revokeAllSessions", "entraID", tenant)
    again = await _invoke(graph, LEE, "requireUserToSignInAgain", "entraID", tenant)
    marked = await _invoke(graph, ALEX_ID, "markUserAsCompromised", "entraID", tenant)
    disabled = await _invoke(graph, LEE, "disable", "entraID", tenant)

    assert [a.status_code for a in (revoked, again, marked, disabled)] == [200, 200, 200, 200]
    later = "2026-11-24T09:35:00.000000Z"
    assert tenant.user(ALEX_ID)["signInSessionsValidFromDateTime"] == later
    assert tenant.user(LEE)["signInSessionsValidFromDateTime"] == later
    # Alex was never at risk: confirming the compromise makes him a risky user.
    alex = tenant.risky_user(ALEX_ID)
    assert (alex["riskState"], alex["riskLevel"], alex["riskDetail"]) == (
        "confirmedCompromised",
        "high",
        "adminConfirmedUserCompromised",
    )
    assert alex["userPrincipalName"] == "alex.wilber@contoso.com"
    assert tenant.user(LEE)["accountEnabled"] is False


@pytest.mark.asyncio
async def test_ad_and_okta_actions_change_what_those_directories_hold(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    reset = await _invoke(graph, MEGAN, "forcePasswordReset", "activeDirectory", tenant)
    okta_off = await _invoke(graph, MEGAN, "disable", "okta", tenant)
    okta_out = await _invoke(graph, MEGAN, "revokeAllSessions", "okta", tenant)

    assert [a.status_code for a in (reset, okta_off, okta_out)] == [200, 200, 200]
    assert tenant.provider_account(MEGAN, "activeDirectory").must_change_password is True
    okta = tenant.provider_account(MEGAN, "okta")
    assert (okta.enabled, okta.sessions_revoked_at) == (False, NOW)
    # AD masters the identity's flag, and the Entra user is untouched by Okta and AD resets.
    assert tenant.identity_account(MEGAN)["isEnabled"] is True
    assert tenant.user(MEGAN)["accountEnabled"] is True


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("upn", "action", "provider", "message"),
    [
        (LEE, "forcePasswordReset", "entraID", "not supported for identity provider 'entraID'"),
        (MEGAN, "markUserAsCompromised", "okta", "not supported for identity provider 'okta'"),
        (
            ADELE,
            "revokeAllSessions",
            "activeDirectory",
            "not supported for identity provider 'activeDirectory'",
        ),
        (ADELE, "unknownFutureValue", "entraID", "not supported"),
        (LEE, "disable", "activeDirectory", "has no account in identity provider 'activeDirectory'"),
        (LEE, "disable", "okta", "has no account in identity provider 'okta'"),
    ],
)
async def test_actions_a_provider_or_identity_does_not_support_are_refused(
    tenant: SandboxTenant, graph: httpx.AsyncClient, upn: str, action: str, provider: str, message: str
) -> None:
    before = tenant.identity_account(upn)

    answer = await _invoke(graph, upn, action, provider, tenant)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"
    assert message in answer.json()["error"]["message"]
    assert tenant.identity_account(upn) == before
    assert tenant.identity_actions() == []


@pytest.mark.asyncio
async def test_an_account_id_of_another_identity_is_refused(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    adele = tenant.identity_account(ADELE)
    body = {"accountId": LEE_ID, "action": "disable", "identityProvider": "entraID"}

    answer = await graph.post(f"{IDENTITIES}/{adele['id']}/invokeAction", json=body)
    unknown = await graph.post(f"{IDENTITIES}/{uuid.uuid4()}/invokeAction", json=body)

    assert answer.status_code == 400
    assert f"has no entraID account '{LEE_ID}'" in answer.json()["error"]["message"]
    assert unknown.status_code == 404
    assert tenant.user(LEE)["accountEnabled"] is True


@pytest.mark.asyncio
async def test_an_invoke_action_body_outside_the_contract_is_a_violation(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    identity = tenant.identity_account(ADELE)

    answer = await graph.post(
        f"{IDENTITIES}/{identity['id']}/invokeAction", json={"accountId": ADELE_ID, "action": "disable"}
    )

    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "SandboxContractViolation"
    assert len(tenant.violations) == 1 and "identityProvider" in tenant.violations[0]
    tenant.violations.clear()


# -- users ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_revoke_sign_in_sessions(tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock) -> None:
    clock.advance(minutes=1)

    answer = await graph.post(f"/v1.0/users/{quote(PATRICK, safe='@')}/revokeSignInSessions")
    missing = await graph.post("/v1.0/users/nobody@contoso.com/revokeSignInSessions")

    assert answer.status_code == 200
    assert answer.json() == {"@odata.context": answer.json()["@odata.context"], "value": True}
    assert answer.json()["@odata.context"].endswith("$metadata#Edm.Boolean")
    assert tenant.user(PATRICK)["signInSessionsValidFromDateTime"] == "2026-11-24T09:31:00.000000Z"
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_a_password_is_redacted_even_from_violations(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    password = "It's-a-S3cret!"

    good = await graph.patch(f"/v1.0/users/{LEE_ID}", json={"passwordProfile": {"password": password}})
    bad = await graph.patch(
        f"/v1.0/users/{LEE_ID}",
        json={"passwordProfile": {"password": password, "forceChangePasswordNextSignIn": "yes"}},
    )

    numeric = await graph.patch(f"/v1.0/users/{LEE_ID}", json={"passwordProfile": {"password": 86420975319}})

    assert good.status_code == 204
    assert tenant.user(LEE)["lastPasswordChangeDateTime"] == NOW
    assert bad.status_code == numeric.status_code == 500
    assert len(tenant.violations) == 2
    everything = (
        repr(tenant.requests) + repr(tenant.violations) + bad.text + numeric.text + repr(tenant.user(LEE))
    )
    for spelling in (password, "It\\'s-a-S3cret!", "S3cret", "86420975319"):
        assert spelling not in everything
    assert next(r.json for r in tenant.requests if r.method == "PATCH") == {
        "passwordProfile": {"password": "***"}
    }
    tenant.violations.clear()


# -- Identity Protection -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_risky_user(graph: httpx.AsyncClient) -> None:
    answer = await graph.get(f"/v1.0/identityProtection/riskyUsers/{LEE_ID}")
    selected = await graph.get(
        f"/v1.0/identityProtection/riskyUsers/{LEE_ID}", params={"$select": "riskLevel"}
    )
    missing = await graph.get(f"/v1.0/identityProtection/riskyUsers/{ALEX_ID}")

    assert answer.json()["userPrincipalName"] == LEE
    assert answer.json()["@odata.context"].endswith("$metadata#identityProtection/riskyUsers/$entity")
    assert selected.json() == {"@odata.context": selected.json()["@odata.context"], "riskLevel": "high"}
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_confirm_compromised_and_dismiss(
    tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock
) -> None:
    clock.advance(minutes=2)
    later = "2026-11-24T09:32:00.000000Z"

    confirmed = await graph.post(
        "/v1.0/identityProtection/riskyUsers/confirmCompromised", json={"userIds": [MEGAN_ID]}
    )
    dismissed = await graph.post("/v1.0/identityProtection/riskyUsers/dismiss", json={"userIds": [LEE_ID]})

    assert confirmed.status_code == dismissed.status_code == 204
    assert confirmed.content == b""
    megan = tenant.risky_user(MEGAN_ID)
    assert (
        megan["riskState"],
        megan["riskLevel"],
        megan["riskDetail"],
        megan["riskLastUpdatedDateTime"],
    ) == (
        "confirmedCompromised",
        "high",
        "adminConfirmedUserCompromised",
        later,
    )
    lee = tenant.risky_user(LEE_ID)
    assert (lee["riskState"], lee["riskLevel"], lee["riskDetail"]) == (
        "dismissed",
        "none",
        "adminDismissedAllRiskForUser",
    )
    lee_detections = [d for d in tenant.risk_detections() if d["userId"] == LEE_ID]
    assert {d["riskState"] for d in lee_detections} == {"dismissed"}
    assert {d["riskState"] for d in tenant.risk_detections() if d["userId"] == MEGAN_ID} == {"atRisk"}


@pytest.mark.asyncio
async def test_confirm_safe_clears_the_risk_as_a_false_positive(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    confirmed = await graph.post(
        "/v1.0/identityProtection/riskyUsers/confirmSafe", json={"userIds": [LEE_ID]}
    )
    empty = await graph.post("/v1.0/identityProtection/riskyUsers/confirmSafe", json={"userIds": []})

    assert confirmed.status_code == 204 and confirmed.content == b""
    lee = tenant.risky_user(LEE_ID)
    assert (lee["riskState"], lee["riskLevel"], lee["riskDetail"]) == (
        "confirmedSafe",
        "none",
        "adminConfirmedAccountSafe",
    )
    assert {d["riskState"] for d in tenant.risk_detections() if d["userId"] == LEE_ID} == {"confirmedSafe"}
    assert empty.status_code == 400
    assert {d["riskState"] for d in tenant.risk_detections() if d["userId"] == MEGAN_ID} == {"atRisk"}


@pytest.mark.asyncio
async def test_unknown_ids_are_skipped_and_limits_refused(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    before = {r["id"]: r for r in (tenant.risky_user(i) for i in (LEE_ID, MEGAN_ID, DIEGO_ID))}
    stranger = str(uuid.uuid4())

    skipped = await graph.post(
        "/v1.0/identityProtection/riskyUsers/dismiss", json={"userIds": [stranger, ALEX_ID]}
    )
    empty = await graph.post("/v1.0/identityProtection/riskyUsers/dismiss", json={"userIds": []})
    too_many = await graph.post(
        "/v1.0/identityProtection/riskyUsers/confirmCompromised",
        json={"userIds": [str(uuid.uuid4()) for _ in range(61)]},
    )

    assert skipped.status_code == 204
    assert {r["id"]: r for r in (tenant.risky_user(i) for i in before)} == before
    with pytest.raises(KeyError):
        tenant.risky_user(ALEX_ID)
    assert (empty.status_code, too_many.status_code) == (400, 400)
    assert "At most 60" in too_many.json()["error"]["message"]


@pytest.mark.asyncio
async def test_risk_detections_by_user_newest_first(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    answer = await graph.get(
        "/v1.0/identityProtection/riskDetections",
        params={"$filter": f"userId eq '{MEGAN_ID}'", "$orderby": "detectedDateTime desc", "$top": "5"},
    )
    oldest_first = await graph.get(
        "/v1.0/identityProtection/riskDetections", params={"$orderby": "detectedDateTime asc"}
    )
    by_type = await graph.get(
        "/v1.0/identityProtection/riskDetections", params={"$filter": "riskEventType eq 'leakedCredentials'"}
    )

    detections = answer.json()["value"]
    assert [(d["riskEventType"], d["detectionTimingType"]) for d in detections] == [
        ("unfamiliarFeatures", "realtime"),
        ("anonymizedIPAddress", "realtime"),
    ]
    assert detections[0]["ipAddress"] == "185.220.101.42"
    assert detections[0]["location"] == {
        "city": "Amsterdam",
        "state": None,
        "countryOrRegion": "NL",
        "geoCoordinates": None,
    }
    stamps = [d["detectedDateTime"] for d in oldest_first.json()["value"]]
    assert stamps == sorted(stamps) and len(stamps) == 7
    [leaked] = by_type.json()["value"]
    assert (leaked["userId"], leaked["detectionTimingType"], leaked["ipAddress"]) == (LEE_ID, "offline", None)
    assert leaked["activity"] == "user"


# -- alerts --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_one_alert(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    alert = tenant.alerts()[0]

    answer = await graph.get(f"/v1.0/security/alerts_v2/{alert['id']}")
    selected = await graph.get(f"/v1.0/security/alerts_v2/{alert['id']}", params={"$select": "id,status"})
    missing = await graph.get("/v1.0/security/alerts_v2/da000000000000000000_1")

    body = answer.json()
    assert body.pop("@odata.context").endswith("$metadata#security/alerts_v2/$entity")
    assert body == alert
    assert set(selected.json()) == {"@odata.context", "id", "status"}
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NotFound")


@pytest.mark.asyncio
async def test_update_alert(tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock) -> None:
    alert_id = tenant.alerts()[0]["id"]
    clock.advance(minutes=3)

    triaged = await graph.patch(
        f"/v1.0/security/alerts_v2/{alert_id}",
        json={
            "status": "inProgress",
            "classification": "truePositive",
            "determination": "compromisedAccount",
            "assignedTo": "alex.wilber@contoso.com",
        },
    )
    resolved = await graph.patch(f"/v1.0/security/alerts_v2/{alert_id}", json={"status": "resolved"})
    reopened = await graph.patch(f"/v1.0/security/alerts_v2/{alert_id}", json={"status": "new"})
    refused = await graph.patch(f"/v1.0/security/alerts_v2/{alert_id}", json={"severity": "low"})

    assert triaged.status_code == 200
    body = triaged.json()
    assert (body["status"], body["classification"], body["determination"], body["assignedTo"]) == (
        "inProgress",
        "truePositive",
        "compromisedAccount",
        "alex.wilber@contoso.com",
    )
    assert body["lastUpdateDateTime"] == "2026-11-24T09:33:00.000000Z"
    assert resolved.json()["resolvedDateTime"] == "2026-11-24T09:33:00.000000Z"
    assert reopened.json()["resolvedDateTime"] is None
    assert refused.status_code == 400 and "severity" in refused.json()["error"]["message"]
    assert tenant.alerts()[0]["severity"] == "high"


@pytest.mark.asyncio
async def test_alert_comments(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    alert = tenant.alerts()[1]
    url = f"/v1.0/security/alerts_v2/{alert['id']}/comments"
    kind = "microsoft.graph.security.alertComment"

    one = await graph.post(url, json={"@odata.type": kind, "comment": "Approved by Alex."})
    two = await graph.post(url, json=[{"@odata.type": kind, "comment": "a"}, {"comment": "b"}])
    blank = await graph.post(url, json={"@odata.type": kind, "comment": "  "})

    assert one.status_code == 200
    assert one.json()["@odata.context"].endswith(f"alerts_v2('{alert['id']}')/comments")
    assert one.json()["value"] == [
        {"comment": "Approved by Alex.", "createdByDisplayName": "remediation-bot", "createdDateTime": NOW}
    ]
    assert [c["comment"] for c in two.json()["value"]] == ["Approved by Alex.", "a", "b"]
    assert blank.status_code == 400
    after = tenant.alerts()[1]
    assert len(after["comments"]) == 3
    assert after["lastUpdateDateTime"] == alert["lastUpdateDateTime"]


# -- faults on the new paths ---------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/identityProtection/riskyUsers/dismiss", {"userIds": [LEE_ID]}),
        ("POST", "/identityProtection/riskyUsers/confirmSafe", {"userIds": [LEE_ID]}),
        ("GET", "/identityProtection/riskDetections", None),
        ("POST", f"/users/{LEE_ID}/revokeSignInSessions", None),
        ("PATCH", "/security/alerts_v2/{alert}", {"status": "inProgress"}),
        ("POST", "/security/alerts_v2/{alert}/comments", {"comment": "x"}),
    ],
)
async def test_faults_apply_to_the_new_paths(
    tenant: SandboxTenant, graph: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    url = "/v1.0" + path.format(alert=tenant.alerts()[0]["id"])
    tenant.inject_fault(method, r".", status=503, headers={"Retry-After": "1"})

    answer = await graph.request(method, url, json=body)

    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")
    assert answer.json()["error"]["code"] == "ServiceUnavailable"


@pytest.mark.asyncio
async def test_a_late_real_answer_still_does_the_work(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    tenant.inject_fault("POST", r"/invokeAction$", status=None, delay=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()

    answer = await _invoke(graph, LEE, "disable", "entraID", tenant)

    assert loop.time() - started >= 0.3
    assert answer.status_code == 200 and answer.json()["correlationId"]
    assert tenant.user(LEE)["accountEnabled"] is False


@pytest.mark.asyncio
async def test_scenario_identity_accounts_are_checked() -> None:
    users = [{"userPrincipalName": "amy@fabrikam.com", "displayName": "Amy"}]
    for extra, message in [
        (
            {"user": "amy@fabrikam.com", "accounts": [{"identityProvider": "entraID", "identifier": "x"}]},
            "come from",
        ),
        ({"user": "amy@fabrikam.com", "acounts": []}, r"unknown \['acounts'\]"),
        ({"user": "bob@fabrikam.com", "accounts": []}, "no user bob@fabrikam.com"),
    ]:
        tenant = SandboxTenant({"users": users, "identityAccounts": [extra]})
        with pytest.raises(ValueError, match=message):
            await tenant.start()
        await tenant.stop()


def test_sync_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="sync_interval"):
        SandboxTenant(DEMO_SCENARIO, sync_interval=0)


@asynccontextmanager
async def _tenant_and_client(
    clock: Clock, **options: Any
) -> AsyncIterator[tuple[SandboxTenant, httpx.AsyncClient]]:
    """A demo tenant built with ``options`` and a raw client holding a token of it."""
    tenant = SandboxTenant(DEMO_SCENARIO, clock=clock, **options)
    await tenant.start()
    try:
        context = ssl.create_default_context(cafile=str(tenant.ca_pem_path))
        async with httpx.AsyncClient(
            base_url=tenant.authority_host, verify=context, trust_env=False
        ) as client:
            answer = await client.post(
                f"/{tenant.tenant_id}/oauth2/v2.0/token",
                data={
                    "client_id": tenant.client_id,
                    "client_secret": tenant.client_secret,
                    "grant_type": "client_credentials",
                    "scope": "https://graph.microsoft.com/.default",
                },
            )
            client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            yield tenant, client
    finally:
        await tenant.stop()
    assert tenant.violations == []
