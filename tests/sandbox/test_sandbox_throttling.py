"""Graph's documented throttling, emulated on request: the limits, the costs, the 429s on the wire."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from devtools.sandbox import DEMO_SCENARIO, SandboxTenant
from devtools.sandbox.throttling import (
    IDENTITY_AND_ACCESS,
    IDENTITY_PROTECTION,
    SECURITY_ALERTS,
    GraphThrottle,
    identity_cost,
    service_of,
    tenant_size,
)


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_path_belongs_to_the_service_microsoft_throttles_it_under() -> None:
    assert service_of("/identityProtection/riskyUsers") == IDENTITY_PROTECTION
    assert service_of("/identityProtection/riskDetections") == IDENTITY_PROTECTION
    assert service_of("/security/alerts_v2") == SECURITY_ALERTS
    assert service_of("/security/alerts_v2/da123/comments") == SECURITY_ALERTS
    assert service_of("/users/abc/checkMemberGroups") == IDENTITY_AND_ACCESS
    # Defender for Identity's resources are not in Microsoft's table: no documented limit.
    assert service_of("/security/identities/identityAccounts") is None


def test_identity_costs_follow_microsofts_table() -> None:
    assert identity_cost("GET", "/users/abc", {"$select": "id"}) == (1, 0)
    assert identity_cost("GET", "/users/abc", {}) == (1, 0)
    assert identity_cost("GET", "/users", {}) == (2, 0)
    assert identity_cost("POST", "/users/abc/checkMemberGroups", {}) == (4, 0)
    assert identity_cost("GET", "/users/abc/transitiveMemberOf/microsoft.graph.directoryRole", {}) == (2, 0)
    assert identity_cost("GET", "/users/abc/transitiveMemberOf", {"$select": "id"}) == (1, 0)
    assert identity_cost("PATCH", "/users/abc", {}) == (1, 1)
    assert identity_cost("POST", "/users/abc/revokeSignInSessions", {}) == (1, 1)
    assert identity_cost("GET", "/users", {"$expand": "manager", "$top": "5"}) == (2, 0)
    assert [tenant_size(n) for n in (1, 49, 50, 500, 501)] == ["S", "S", "M", "M", "L"]


def test_identity_protection_allows_one_request_per_second_and_sends_no_retry_after() -> None:
    ticks = Ticks()
    throttle = GraphThrottle(users=lambda: 10, clock=ticks)
    assert throttle.admit("GET", "/identityProtection/riskyUsers", {}) is None
    ticks.now += 0.5
    refused = throttle.admit("GET", "/identityProtection/riskDetections", {})
    assert refused is not None
    assert refused.service == IDENTITY_PROTECTION
    assert refused.retry_after is None
    ticks.now += 0.5
    assert throttle.admit("GET", "/identityProtection/riskDetections", {}) is None


def test_security_alerts_allow_150_a_minute_then_say_when_to_retry() -> None:
    ticks = Ticks()
    throttle = GraphThrottle(users=lambda: 10, clock=ticks)
    for _ in range(150):
        assert throttle.admit("GET", "/security/alerts_v2", {}) is None
        ticks.now += 0.1
    refused = throttle.admit("POST", "/security/alerts_v2/a1/comments", {})
    assert refused is not None and refused.retry_after == 45  # the first call leaves the window 45 s from now
    assert throttle.admit("GET", "/users/abc", {}) is None, "another service is not affected"
    ticks.now += 45.01
    assert throttle.admit("GET", "/security/alerts_v2", {}) is None


def test_identity_and_access_is_a_token_bucket_sized_by_the_tenant() -> None:
    ticks = Ticks()
    throttle = GraphThrottle(users=lambda: 10, clock=ticks)  # S: 3,500 units per 10 s
    for _ in range(875):
        assert throttle.admit("POST", "/users/abc/checkMemberGroups", {}) is None
    refused = throttle.admit("POST", "/users/abc/checkMemberGroups", {})
    assert refused is not None and refused.retry_after == 1
    ticks.now += 4 / 350  # four units refill in 4/350 s
    assert throttle.admit("POST", "/users/abc/checkMemberGroups", {}) is None
    big = GraphThrottle(users=lambda: 600, clock=ticks)  # L: 8,000 units per 10 s
    assert all(big.admit("GET", "/users", {}) is None for _ in range(4000))
    assert big.admit("GET", "/users", {}) is not None


def test_writes_have_their_own_quota() -> None:
    ticks = Ticks()
    throttle = GraphThrottle(users=lambda: 600, clock=ticks)
    for _ in range(3000):
        assert throttle.admit("PATCH", "/users/abc", {}) is None
    refused = throttle.admit("POST", "/users/abc/revokeSignInSessions", {})
    assert refused is not None and "writes" in refused.limit
    assert throttle.admit("GET", "/users/abc", {"$select": "id"}) is None, "reads still go through"


@pytest_asyncio.fixture
async def throttled_graph() -> AsyncIterator[tuple[SandboxTenant, httpx.AsyncClient]]:
    sandbox = SandboxTenant(DEMO_SCENARIO, throttling=True)
    await sandbox.start()
    context = ssl.create_default_context(cafile=str(sandbox.ca_pem_path))
    async with httpx.AsyncClient(base_url=sandbox.authority_host, verify=context, trust_env=False) as client:
        answer = await client.post(
            f"/{sandbox.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": sandbox.client_id,
                "client_secret": sandbox.client_secret,
                "grant_type": "client_credentials",
                "scope": "https://graph.microsoft.com/.default",
            },
        )
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield sandbox, client
    await sandbox.stop()
    assert sandbox.violations == []


async def test_a_throttled_tenant_answers_429_as_graph_does(
    throttled_graph: tuple[SandboxTenant, httpx.AsyncClient],
) -> None:
    tenant, graph = throttled_graph
    first = await graph.get("/v1.0/identityProtection/riskyUsers")
    second = await graph.get("/v1.0/identityProtection/riskyUsers")
    assert first.status_code == 200
    # Unless this test was descheduled for a whole second between the two calls.
    assert second.status_code == 429 or tenant.requests[-1].arrived - tenant.requests[-2].arrived >= 1
    if second.status_code == 429:
        assert "Retry-After" not in second.headers
        assert second.json()["error"]["code"] == "TooManyRequests"
        assert [t.service for t in tenant.throttled] == [IDENTITY_PROTECTION]


async def test_the_sandbox_times_every_request(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    # The default tenant (no throttling): the same burst is answered in full.
    answers = [await graph.get("/v1.0/identityProtection/riskyUsers") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert tenant.throttled == []
    timed = tenant.requests[-3:]
    assert all(0 < r.arrived <= r.answered for r in timed)
    assert timed[0].answered <= timed[1].arrived
