"""checkMemberGroups and transitiveMemberOf/microsoft.graph.directoryRole, raw over HTTPS."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from devtools.sandbox import SandboxTenant, load_contract
from devtools.sandbox.contract import DEFAULT_EXTENSIONS

ALEX = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51"
ISAIAH = "isaiah.langer@contoso.com"
PATRICK = "patrick.o'brien@contoso.com"
SOC_RESPONDERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c01"
SOC_APPROVERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c02"
SOC_TIER2 = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c03"
ROLES_PATH = "/v1.0/users/{}/transitiveMemberOf/microsoft.graph.directoryRole"
ADVANCED = {"ConsistencyLevel": "eventual"}


def _check(graph: httpx.AsyncClient, user: str, group_ids: list[str]) -> Any:
    return graph.post(f"/v1.0/users/{quote(user, safe='@')}/checkMemberGroups", json={"groupIds": group_ids})


# -- the contract extension ------------------------------------------------------------------


def test_extension_operations_follow_the_subset_conventions() -> None:
    extension = yaml.safe_load(Path(DEFAULT_EXTENSIONS[0]).read_text(encoding="utf-8"))
    document = load_contract().document
    operations = [(t, m, op) for t, item in extension["paths"].items() for m, op in item.items()]

    assert {(t, m) for t, m, _ in operations} == {
        ("/users/{user-id}/checkMemberGroups", "post"),
        ("/users/{user-id}/transitiveMemberOf/microsoft.graph.directoryRole", "get"),
        ("/$batch", "post"),
        ("/identityProtection/riskyUsers/confirmSafe", "post"),
    }
    for template, method, operation in operations:
        assert document["paths"][template][method] == operation  # merged as written
        assert operation["operationId"]
        if template == "/$batch":
            # A concept page, not an API reference; the batch needs no permission of its own.
            assert operation["externalDocs"]["url"] == "https://learn.microsoft.com/graph/json-batching"
            assert operation["x-ms-permissions"]["application"]["least"] == []
        else:
            assert operation["externalDocs"]["url"].startswith("https://learn.microsoft.com/graph/api/")
            assert operation["x-ms-permissions"]["application"]["least"]
        for status in ("4XX", "5XX"):
            assert operation["responses"][status] == {"$ref": "#/components/responses/error"}
        assert operation["responses"]["429"] == {"$ref": "#/components/responses/throttled"}
    # The locally defined components reach the merged document; refs into the subset resolve
    # (load_contract validates the merged document with openapi-spec-validator).
    assert "microsoft.graph.directoryRole" in document["components"]["schemas"]
    assert "error" in document["components"]["responses"]


# -- checkMemberGroups -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_check_member_groups_is_transitive(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    answer = await _check(graph, ISAIAH, [SOC_RESPONDERS.upper(), SOC_APPROVERS, SOC_TIER2])

    assert answer.status_code == 200
    assert answer.json()["value"] == [SOC_RESPONDERS, SOC_TIER2]
    assert answer.json()["@odata.context"].endswith("$metadata#Collection(Edm.String)")
    assert (await _check(graph, ALEX, [SOC_TIER2])).json()["value"] == []
    assert tenant.violations == []


@pytest.mark.asyncio
async def test_check_member_groups_refusals(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    malformed = await _check(graph, ALEX, [SOC_RESPONDERS, "SOC Responders"])
    unknown = await _check(graph, "nobody@contoso.com", [SOC_RESPONDERS])

    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "Request_BadRequest"
    assert unknown.status_code == 404
    assert tenant.violations == []


@pytest.mark.asyncio
async def test_more_than_twenty_groups_breaks_the_contract(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await _check(graph, ALEX, [f"00000000-0000-4000-8000-{n:012d}" for n in range(21)])

    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "SandboxContractViolation"
    assert len(tenant.violations) == 1 and "checkMemberGroups request" in tenant.violations[0]
    tenant.violations.clear()


# -- transitiveMemberOf/microsoft.graph.directoryRole ------------------------------------------


@pytest.mark.asyncio
async def test_roles_of_a_user_with_select_count_and_paging(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    tenant.add_member("9b2c4d6e-8f0a-4b1c-9d2e-3f4a5b6c7d01", ALEX)  # Global Administrator too
    params = {"$select": "id,displayName,roleTemplateId", "$count": "true", "$top": "1"}

    first = await graph.get(ROLES_PATH.format(ALEX), params=params, headers=ADVANCED)
    second = await graph.get(first.json()["@odata.nextLink"], headers=ADVANCED)

    assert first.status_code == second.status_code == 200
    assert first.json()["@odata.count"] == second.json()["@odata.count"] == 2
    assert first.json()["value"] == [
        {
            "id": "9b2c4d6e-8f0a-4b1c-9d2e-3f4a5b6c7d01",
            "displayName": "Global Administrator",
            "roleTemplateId": "62e90394-69f5-4237-9190-012177145e10",
        }
    ]
    assert [r["displayName"] for r in second.json()["value"]] == ["Security Reader"]
    assert "@odata.nextLink" not in second.json()
    assert first.json()["@odata.nextLink"].startswith(f"{tenant.graph_base_url}/users/{ALEX}/")
    assert tenant.violations == []


@pytest.mark.asyncio
async def test_roles_by_upn_with_an_apostrophe(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    answer = await graph.get(
        ROLES_PATH.format(quote(PATRICK, safe="@")), params={"$count": "true"}, headers=ADVANCED
    )

    assert answer.status_code == 200
    [role] = answer.json()["value"]
    assert role["displayName"] == "Helpdesk Administrator"
    assert set(role) == {"id", "deletedDateTime", "description", "displayName", "roleTemplateId"}


@pytest.mark.asyncio
async def test_roles_need_the_advanced_query_parameters(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    without_count = await graph.get(ROLES_PATH.format(ALEX), headers=ADVANCED)
    bad_select = await graph.get(
        ROLES_PATH.format(ALEX), params={"$count": "true", "$select": "mail"}, headers=ADVANCED
    )
    assert without_count.status_code == 400
    assert without_count.json()["error"]["code"] == "Request_UnsupportedQuery"
    assert bad_select.status_code == 400
    assert tenant.violations == []

    without_header = await graph.get(ROLES_PATH.format(ALEX), params={"$count": "true"})

    assert without_header.status_code == 500  # the contract requires ConsistencyLevel: eventual
    assert len(tenant.violations) == 1 and "ConsistencyLevel" in tenant.violations[0]
    tenant.violations.clear()
