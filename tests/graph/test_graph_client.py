"""GraphClient against the sandbox: paging, retries, error decoding, escaping."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from bot.errors import (
    GraphError,
    GraphForbidden,
    GraphNotFound,
    GraphThrottled,
    GraphUnavailable,
)
from bot.graph import GraphClient, TokenProvider, build_http_client, odata_string
from devtools.sandbox import SandboxTenant

from .helpers import RecordingSleep, graph_calls

SOURCES = ["microsoftDefenderForIdentity", "azureAdIdentityProtection"]
PATRICK = "patrick.o'brien@contoso.com"
PATRICK_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a04"


@pytest.mark.asyncio
async def test_list_alerts_follows_every_page(tenant: SandboxTenant, graph: GraphClient) -> None:
    alerts = [a async for a in graph.list_alerts(service_sources=SOURCES, updated_after=None, top=2)]

    # Six alerts about the four compromised identities, one about the account attack disruption
    # contained, one about the break-glass account.
    assert len(alerts) == len({a["id"] for a in alerts}) == 8
    assert graph_calls(tenant) == ["GET /v1.0/security/alerts_v2 200"] * 4
    first = next(r for r in tenant.requests if r.path.startswith("/v1.0/"))
    assert first.query == {
        "$top": "2",
        "$filter": "(serviceSource eq 'microsoftDefenderForIdentity' or "
        "serviceSource eq 'azureAdIdentityProtection')",
    }


@pytest.mark.asyncio
async def test_list_alerts_since_a_moment_with_select(tenant: SandboxTenant, graph: GraphClient) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    added = tenant.add_alert(
        {
            "user": "lee.gu@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Anonymous IP address",
        }
    )

    alerts = [
        a
        async for a in graph.list_alerts(
            service_sources=SOURCES[1:], updated_after=since, select=["id", "title"]
        )
    ]

    assert alerts == [{"id": added["id"], "title": "Anonymous IP address"}]
    sent = next(r for r in tenant.requests if r.path.startswith("/v1.0/")).query["$filter"]
    assert sent.startswith("serviceSource eq 'azureAdIdentityProtection' and lastUpdateDateTime gt ")
    assert sent.endswith("Z")


@pytest.mark.asyncio
async def test_get_and_update_user_by_upn_with_an_apostrophe(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    user = await graph.get_user(PATRICK, select=["id", "accountEnabled", "onPremisesSyncEnabled"])
    written = await graph.update_user(PATRICK, {"accountEnabled": False})

    assert {k: user[k] for k in ("id", "accountEnabled", "onPremisesSyncEnabled")} == {
        "id": PATRICK_ID,
        "accountEnabled": True,
        "onPremisesSyncEnabled": True,
    }
    assert written.status == 204
    assert written.body is None
    assert written.request_id == tenant.requests[-1].request_id
    assert tenant.user(PATRICK_ID)["accountEnabled"] is False


@pytest.mark.asyncio
async def test_odata_literals_are_escaped(tenant: SandboxTenant, graph: GraphClient) -> None:
    assert odata_string("o'brien@contoso.com") == "'o''brien@contoso.com'"

    risky = [
        u async for u in graph.list_risky_users(filter=f"userPrincipalName eq {odata_string(PATRICK)}", top=5)
    ]

    assert [u["id"] for u in risky] == [PATRICK_ID]


@pytest.mark.asyncio
async def test_list_risky_users_pages(tenant: SandboxTenant, graph: GraphClient) -> None:
    risky = [u async for u in graph.list_risky_users(filter="riskState eq 'atRisk'", top=1)]

    assert len(risky) == 3
    assert len(graph_calls(tenant)) == 3


@pytest.mark.asyncio
async def test_429_with_fractional_retry_after_waits_exactly_that(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault("GET", r"/users/", status=429, headers={"Retry-After": "0.5"})

    user = await graph.get_user("lee.gu@contoso.com", select=["id"])

    assert user["id"]
    assert sleeps.calls == [0.5]
    assert [c.split()[-1] for c in graph_calls(tenant)] == ["429", "200"]


@pytest.mark.asyncio
async def test_429_with_an_http_date_retry_after(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    # The client reads the date on a clock of the test's, so the wait does not depend on how
    # long the request took.
    moment = datetime.now(UTC).replace(microsecond=0)
    graph = GraphClient(
        http, tokens, tenant.graph_base_url, sleep=sleeps, rng=random.Random(7), now=lambda: moment
    )
    when = format_datetime(moment + timedelta(seconds=5), usegmt=True)
    tenant.inject_fault("GET", r"/users/", status=429, headers={"Retry-After": when})

    await graph.get_user("lee.gu@contoso.com", select=["id"])

    assert len(sleeps.calls) == 1
    assert 3.0 < sleeps.calls[0] <= 5.0


@pytest.mark.asyncio
async def test_429_without_retry_after_backs_off_with_bounded_jitter(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    # Identity Protection throttles without Retry-After.
    graph = GraphClient(
        http,
        tokens,
        tenant.graph_base_url,
        max_attempts=6,
        backoff_base=0.5,
        backoff_cap=3.0,
        sleep=sleeps,
        rng=random.Random(1),
        # Only the backoff is under test here; test_graph_remediation.py covers the pacing.
        identity_protection_interval=0.0,
    )
    tenant.inject_fault("GET", r"/identityProtection/riskyUsers", status=429, times=5)

    risky = [u async for u in graph.list_risky_users()]

    assert len(risky) == 4
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]  # base * 2**(n-1), capped
    assert len(sleeps.calls) == 5
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(sleeps.calls, ceilings, strict=True))
    assert len(set(sleeps.calls)) == 5  # jittered, not a fixed schedule


@pytest.mark.asyncio
async def test_503_then_success(tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep) -> None:
    tenant.inject_fault("PATCH", r"/users/", status=503)
    tenant.inject_fault("PATCH", r"/users/", status=504)

    written = await graph.update_user("lee.gu@contoso.com", {"accountEnabled": False})

    assert written.status == 204
    assert len(sleeps.calls) == 2
    assert [c.split()[-1] for c in graph_calls(tenant)] == ["503", "504", "204"]


@pytest.mark.asyncio
async def test_a_timeout_is_retried(
    tenant: SandboxTenant, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault("GET", r"/users/", status=200, delay=1.0)
    async with build_http_client(ca_bundle=str(tenant.ca_pem_path), timeout=0.2) as short:
        graph = GraphClient(short, tokens, tenant.graph_base_url, sleep=sleeps)
        user = await graph.get_user("lee.gu@contoso.com", select=["displayName"])

    assert user == {"@odata.context": user["@odata.context"], "displayName": "Lee Gu"}
    assert len(sleeps.calls) == 1


@pytest.mark.asyncio
async def test_throttling_that_never_ends_gives_up_after_max_attempts(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault("GET", r"/users/", status=429, headers={"Retry-After": "2"}, times=10)

    with pytest.raises(GraphThrottled) as caught:
        await graph.get_user("lee.gu@contoso.com", select=["id"])

    assert sleeps.calls == [2.0, 2.0, 2.0]
    assert len(graph_calls(tenant)) == 4
    error = caught.value
    assert (error.status, error.code, error.method) == (429, "TooManyRequests", "GET")
    assert error.request_id == tenant.requests[-1].request_id
    assert error.message == (
        "Graph kept throttling GET /users/lee.gu@contoso.com (429 TooManyRequests) after 4 "
        "attempts: Please retry again later."
    )


@pytest.mark.asyncio
async def test_a_retry_after_beyond_the_cap_gives_up_at_once(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault("GET", r"/users/", status=429, headers={"Retry-After": "120"})

    with pytest.raises(GraphThrottled, match="asked to wait 120 s, more than the 30 s cap"):
        await graph.get_user("lee.gu@contoso.com", select=["id"])

    assert sleeps.calls == []


@pytest.mark.asyncio
async def test_unavailable_after_every_attempt(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault("GET", r"/security/alerts_v2", status=503, times=4)

    with pytest.raises(GraphUnavailable, match=r"kept failing GET /security/alerts_v2 \(503"):
        async for _ in graph.list_alerts(service_sources=SOURCES, updated_after=None):
            pass

    assert len(sleeps.calls) == 3


@pytest.mark.asyncio
async def test_403_is_forbidden_with_code_and_request_id(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault("PATCH", r"/users/", status=403)

    with pytest.raises(GraphForbidden) as caught:
        await graph.update_user(PATRICK_ID, {"accountEnabled": False})

    error = caught.value
    assert error.message == (
        f"Graph refused PATCH /users/{PATRICK_ID} (403 Authorization_RequestDenied): "
        "Insufficient privileges to complete the operation."
    )
    assert (error.status, error.code, error.path) == (
        403,
        "Authorization_RequestDenied",
        f"/users/{PATRICK_ID}",
    )
    assert error.request_id == tenant.requests[-1].request_id
    assert sleeps.calls == []
    assert tenant.user(PATRICK_ID)["accountEnabled"] is True


@pytest.mark.asyncio
async def test_unknown_user_is_not_found(tenant: SandboxTenant, graph: GraphClient) -> None:
    with pytest.raises(GraphNotFound) as caught:
        await graph.get_user("nobody@contoso.com", select=["id"])

    assert caught.value.code == "Request_ResourceNotFound"
    assert caught.value.request_id


@pytest.mark.asyncio
async def test_a_gateway_page_still_gives_a_clear_error(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    tenant.inject_fault(
        "GET", r"/users/", status=502, body="<html><body><h1>502 Bad Gateway</h1></body></html>"
    )

    with pytest.raises(GraphError) as caught:
        await graph.get_user("lee.gu@contoso.com", select=["id"])

    assert type(caught.value) is GraphError
    assert caught.value.message.startswith(
        "Graph refused GET /users/lee.gu@contoso.com (502): non-Graph error body (text/html"
    )
    assert "502 Bad Gateway" in caught.value.message
    assert caught.value.request_id == tenant.requests[-1].request_id
    assert sleeps.calls == []


@pytest.mark.asyncio
async def test_a_next_link_to_another_host_is_not_followed(tenant: SandboxTenant, graph: GraphClient) -> None:
    tenant.inject_fault(
        "GET",
        r"/security/alerts_v2",
        status=200,
        body={"value": [], "@odata.nextLink": "https://attacker.example/v1.0/security/alerts_v2"},
    )

    with pytest.raises(GraphError, match=r"Refusing to send a Graph token to 'attacker\.example'"):
        async for _ in graph.list_alerts(service_sources=SOURCES, updated_after=None):
            pass
