"""The Graph operations of the sandbox, driven over HTTPS with a raw client."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from devtools.sandbox import SandboxTenant, load_contract

from .helpers import Clock

IDENTITY_SOURCES = {"microsoftDefenderForIdentity", "azureAdIdentityProtection"}
PATRICK = "patrick.o'brien@contoso.com"


async def _all_pages(graph: httpx.AsyncClient, url: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    answer = await graph.get(url, params=params)
    while True:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items.extend(body["value"])
        if "@odata.nextLink" not in body:
            return items
        answer = await graph.get(body["@odata.nextLink"])


@pytest.mark.asyncio
async def test_demo_tenant_has_compromised_identities_from_both_sources(
    tenant: SandboxTenant,
) -> None:
    alerts = tenant.alerts()
    by_source: dict[str, set[str]] = {}
    for alert in alerts:
        for evidence in alert["evidence"]:
            if evidence["@odata.type"] == "#microsoft.graph.security.userEvidence":
                upn = evidence["userAccount"]["userPrincipalName"]
                by_source.setdefault(alert["serviceSource"], set()).add(upn)
    assert set(by_source) == IDENTITY_SOURCES
    assert len(set().union(*by_source.values())) >= 3
    synced = tenant.user("adele.vance@contoso.com")
    assert synced["onPremisesSyncEnabled"] is True
    assert synced["onPremisesSecurityIdentifier"].startswith("S-1-5-21-")
    assert tenant.user("lee.gu@contoso.com")["onPremisesSecurityIdentifier"] is None


@pytest.mark.asyncio
async def test_scenario_objects_use_only_contract_properties(tenant: SandboxTenant) -> None:
    contract = load_contract()
    alert_properties = contract.properties("microsoft.graph.security.alert") | {"id"}
    account_properties = contract.properties("microsoft.graph.security.userAccount")
    for alert in tenant.alerts():
        assert set(alert) <= alert_properties
        for evidence in alert["evidence"]:
            kind = evidence["@odata.type"].removeprefix("#")
            assert set(evidence) - {"@odata.type"} <= contract.properties(kind), kind
            if "userAccount" in evidence:
                assert set(evidence["userAccount"]) <= account_properties
    assert set(tenant.user("lee.gu@contoso.com")) <= contract.properties("microsoft.graph.user")


@pytest.mark.asyncio
async def test_alert_filter_forms_the_client_sends(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    everything = await _all_pages(graph, "/v1.0/security/alerts_v2")
    mdi_or_idp = await _all_pages(
        graph,
        "/v1.0/security/alerts_v2",
        **{
            "$filter": "(serviceSource eq 'microsoftDefenderForIdentity' or serviceSource eq "
            "'azureAdIdentityProtection') and lastUpdateDateTime gt 2026-11-24T08:59:00Z"
        },
    )
    new_since = await _all_pages(
        graph,
        "/v1.0/security/alerts_v2",
        **{"$filter": "status eq 'new' and createdDateTime ge 2026-11-24T09:00:00Z"},
    )

    assert len(everything) == 8
    # The clock is 09:30; alerts created/updated within the last 30 minutes qualify.
    assert {a["title"] for a in mdi_or_idp} == {
        "Suspected identity theft (pass-the-ticket)",
        "Leaked credentials",
        "Unfamiliar sign-in properties",
        "Suspected brute-force attack (Kerberos, NTLM)",
        "Suspected ransomware activity (remote encryption from a compromised account)",
    }
    assert {a["userPrincipalName"] for a in _accounts(new_since)} == {
        "lee.gu@contoso.com",
        PATRICK,
        "grady.archie@contoso.com",
    }


def _accounts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["userAccount"] for a in alerts for e in a["evidence"] if "userAccount" in e]


@pytest.mark.asyncio
async def test_unknown_filter_syntax_is_a_400_not_ignored(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.get("/v1.0/security/alerts_v2", params={"$filter": "startswith(title, 'Suspected')"})

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"


@pytest.mark.asyncio
async def test_paging_returns_each_alert_exactly_once_even_when_one_arrives_midway(
    tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock
) -> None:
    first = await graph.get("/v1.0/security/alerts_v2", params={"$top": "4"})
    clock.advance(minutes=1)
    tenant.add_alert(
        {
            "user": "lee.gu@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Anonymous IP address",
        }
    )
    second = await graph.get(first.json()["@odata.nextLink"])

    ids = [a["id"] for a in first.json()["value"] + second.json()["value"]]
    assert len(ids) == len(set(ids)) == 8
    assert "@odata.nextLink" not in second.json()
    assert len(await _all_pages(graph, "/v1.0/security/alerts_v2", **{"$top": "1"})) == 9


@pytest.mark.asyncio
async def test_next_link_is_absolute_under_the_caller_host(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.get("/v1.0/security/alerts_v2", params={"$top": "2"})

    link = answer.json()["@odata.nextLink"]
    assert link.startswith(f"{tenant.graph_base_url}/security/alerts_v2?$skiptoken=")
    reused = await graph.get(link)
    again = await graph.get(link)
    assert reused.status_code == 200
    assert again.status_code == 400  # a skiptoken is used once


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "params", [{"$top": "5000"}, {"$top": "0"}, {"$skip": "2"}, {"$orderby": "title asc"}]
)
async def test_unsupported_paging_options_are_refused(
    tenant: SandboxTenant, graph: httpx.AsyncClient, params: dict[str, str]
) -> None:
    answer = await graph.get("/v1.0/security/alerts_v2", params=params)

    assert answer.status_code == 400


@pytest.mark.asyncio
async def test_select_and_orderby(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    answer = await graph.get(
        "/v1.0/security/alerts_v2",
        params={"$select": "id,createdDateTime", "$orderby": "createdDateTime asc"},
    )

    values = answer.json()["value"]
    assert all(set(v) == {"id", "createdDateTime"} for v in values)
    assert [v["createdDateTime"] for v in values] == sorted(v["createdDateTime"] for v in values)


@pytest.mark.asyncio
async def test_risky_users_filter_and_paging(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    high = await _all_pages(
        graph,
        "/v1.0/identityProtection/riskyUsers",
        **{"$filter": "riskLevel eq 'high' and riskState eq 'atRisk'"},
    )
    at_risk = await _all_pages(
        graph,
        "/v1.0/identityProtection/riskyUsers",
        **{"$filter": "riskState eq 'atRisk'", "$top": "1"},
    )

    assert [u["userPrincipalName"] for u in high] == ["lee.gu@contoso.com"]
    assert len(at_risk) == 3


@pytest.mark.asyncio
async def test_get_user_by_upn_with_select(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    answer = await graph.get(
        f"/v1.0/users/{quote(PATRICK, safe='@')}",
        params={"$select": "id,onPremisesSecurityIdentifier,accountEnabled"},
    )
    default = await graph.get(f"/v1.0/users/{quote(PATRICK, safe='@')}")

    body = answer.json()
    assert body.pop("@odata.context").endswith("$metadata#users/$entity")
    assert body == {
        "id": "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a04",
        "onPremisesSecurityIdentifier": "S-1-5-21-2718434511-2385740213-3112547860-1207",
        "accountEnabled": True,
    }
    assert "accountEnabled" not in default.json()
    assert default.json()["userPrincipalName"] == PATRICK


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("user", "body", "status", "code"),
    [
        ("nobody@contoso.com", {"accountEnabled": False}, 404, "Request_ResourceNotFound"),
        ("lee.gu@contoso.com", {"onPremisesSyncEnabled": True}, 400, "Request_BadRequest"),
        ("lee.gu@contoso.com", {"favouriteColour": "red"}, 400, "Request_BadRequest"),
        ("adele.vance@contoso.com", {"displayName": "A. Vance"}, 400, "Request_BadRequest"),
        (
            "lee.gu@contoso.com",
            {"passwordProfile": {"password": "short", "forceChangePasswordNextSignIn": True}},
            400,
            "Request_BadRequest",
        ),
    ],
)
async def test_patch_user_refusals(
    tenant: SandboxTenant,
    graph: httpx.AsyncClient,
    user: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    answer = await graph.patch(f"/v1.0/users/{user}", json=body)

    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)


@pytest.mark.asyncio
async def test_patch_password_profile(tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock) -> None:
    answer = await graph.patch(
        "/v1.0/users/lee.gu@contoso.com",
        json={
            "passwordProfile": {
                "password": "Correct-Horse-Battery-9",
                "forceChangePasswordNextSignIn": True,
            }
        },
    )

    user = tenant.user("lee.gu@contoso.com")
    assert answer.status_code == 204
    assert user["passwordProfile"] == {
        "forceChangePasswordNextSignIn": True,
        "forceChangePasswordNextSignInWithMfa": False,
        "password": None,
    }
    assert user["lastPasswordChangeDateTime"] == "2026-11-24T09:30:00.000000Z"


@pytest.mark.asyncio
async def test_a_scenario_can_be_a_dict_and_typos_are_refused() -> None:
    tenant = SandboxTenant({"users": [{"userPrincipalName": "amy@fabrikam.com", "displayName": "Amy"}]})
    await tenant.start()
    try:
        alert = tenant.add_alert(
            {
                "user": "amy@fabrikam.com",
                "serviceSource": "microsoftDefenderForIdentity",
                "title": "Suspected DCSync attack (replication of directory services)",
                "severity": "high",
            }
        )
        assert alert["evidence"][0]["userAccount"]["userSid"] is None
        with pytest.raises(ValueError, match=r"unknown \['sevirity'\]"):
            tenant.add_alert(
                {"user": "amy@fabrikam.com", "serviceSource": "x", "title": "t", "sevirity": "high"}
            )
        with pytest.raises(ValueError, match=r"no user bob@fabrikam\.com"):
            tenant.add_alert({"user": "bob@fabrikam.com", "serviceSource": "x", "title": "t"})
    finally:
        await tenant.stop()
    assert tenant.violations == []


def test_make_demo_adds_a_password_spray_of_25_people() -> None:
    from devtools.demo import demo_scenario

    scenario = demo_scenario()
    sprayed = [a for a in scenario["alerts"] if a["user"].startswith("spray.target")]
    assert len(sprayed) == 25 and {a["title"] for a in sprayed} == {"Password spray"}
    assert all(a["ip"]["address"] == "198.51.100.23" for a in sprayed)
    users = {u["userPrincipalName"]: u for u in scenario["users"]}
    assert users["spray.target01@contoso.com"]["displayName"] == "Spray Target 01"
    assert "adele.vance@contoso.com" in users  # beside the individual cases


def test_a_campaign_entry_with_an_unknown_key_is_refused() -> None:
    from devtools.sandbox.scenario import load_scenario

    with pytest.raises(ValueError, match="unknown"):
        load_scenario({"campaigns": [{"title": "x", "count": 2, "upn": "u{n}@c.com", "colour": "red"}]})
