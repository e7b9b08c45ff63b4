"""``POST /$batch`` in the sandbox, as Microsoft documents JSON batching.

https://learn.microsoft.com/graph/json-batching: at most 20 requests, unique ids, relative
urls, a Content-Type with every body; 400 for a malformed batch, 200 with one response per
request otherwise. Each request inside is validated, throttled, faulted and handled as if it
came alone (https://learn.microsoft.com/graph/throttling#throttling-and-batching).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devtools.sandbox import DEMO_SCENARIO, SandboxTenant

ADELE = "adele.vance@contoso.com"
ADELE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"
LEE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
JSON = {"Content-Type": "application/json"}


def _by_id(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in answer.json()["responses"]}


@pytest.mark.asyncio
async def test_a_batch_answers_each_request_with_its_own_status(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {"id": "1", "method": "GET", "url": f"/users/{ADELE_ID}?$select=id,accountEnabled"},
                {
                    "id": "2",
                    "method": "PATCH",
                    "url": f"/users/{LEE_ID}",
                    "headers": JSON,
                    "body": {"accountEnabled": False},
                },
                {"id": "3", "method": "GET", "url": "users/00000000-0000-4000-8000-000000000000"},
            ]
        },
    )

    assert answer.status_code == 200
    assert answer.headers["request-id"]
    # Graph promises no order; the sandbox answers in reverse, so clients must match by id.
    assert [item["id"] for item in answer.json()["responses"]] == ["3", "2", "1"]
    items = _by_id(answer)
    assert items["1"]["status"] == 200
    assert items["1"]["body"]["accountEnabled"] is True
    assert items["1"]["headers"]["Content-Type"].startswith("application/json")
    assert items["2"]["status"] == 204 and "body" not in items["2"]
    assert items["3"]["status"] == 404
    assert items["3"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert tenant.user(LEE_ID)["accountEnabled"] is False
    # One HTTP exchange; the requests inside are recorded apart, each naming its batch.
    [batch] = [r for r in tenant.requests if r.path.startswith("/v1.0/")]
    assert (batch.method, batch.path, batch.status) == ("POST", "/v1.0/$batch", 200)
    inside = tenant.batched_requests
    assert [(r.method, r.path, r.status) for r in inside] == [
        ("GET", f"/v1.0/users/{ADELE_ID}", 200),
        ("PATCH", f"/v1.0/users/{LEE_ID}", 204),
        ("GET", "/v1.0/users/00000000-0000-4000-8000-000000000000", 404),
    ]
    assert {r.batch_request_id for r in inside} == {batch.request_id}
    assert inside[0].query == {"$select": "id,accountEnabled"}


def _step(batch_id: str = "1", **fields: Any) -> dict[str, Any]:
    return {"id": batch_id, "method": "GET", "url": f"/users/{ADELE_ID}", **fields}


MALFORMED: dict[str, Any] = {
    "no requests": {"value": []},
    "not an object": [_step()],
    "empty": {"requests": []},
    "21 requests": {"requests": [_step(str(i)) for i in range(21)]},
    "duplicate ids": {"requests": [_step("a"), _step("A")]},
    "no url": {"requests": [{"id": "1", "method": "GET"}]},
    "no method": {"requests": [{"id": "1", "url": "/users/x"}]},
    "body without Content-Type": {
        "requests": [
            _step(
                method="PATCH",
                url=f"/users/{LEE_ID}",
                headers={"client-request-id": "2f4c"},
                body={"accountEnabled": False},
            )
        ]
    },
    "absolute url": {"requests": [_step(url=f"https://graph.microsoft.com/v1.0/users/{LEE_ID}")]},
    "nested batch": {"requests": [_step(method="POST", url="/$batch", headers=JSON, body={"requests": []})]},
    "headers not strings": {"requests": [_step(headers={"ConsistencyLevel": 1})]},
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_batch_is_a_400_and_runs_nothing(
    case: str, tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.post("/v1.0/$batch", json=MALFORMED[case])

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"
    assert tenant.batched_requests == []
    assert tenant.user(LEE_ID)["accountEnabled"] is True
    # A client that sends one has a bug: the test that met it fails.
    assert len(tenant.violations) == 1 and "(Graph answers 400)" in tenant.violations[0]
    tenant.violations.clear()


@pytest.mark.asyncio
async def test_a_request_inside_is_held_to_the_contract_alone(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {
                    "id": "bad",
                    "method": "PATCH",
                    "url": f"/users/{LEE_ID}",
                    "headers": JSON,
                    "body": {"accountEnabled": "no"},
                },
                {"id": "good", "method": "GET", "url": f"/users/{ADELE_ID}?$select=id"},
            ]
        },
    )

    assert answer.status_code == 200
    items = _by_id(answer)
    assert items["bad"]["status"] == 500
    assert items["bad"]["body"]["error"]["code"] == "SandboxContractViolation"
    assert items["good"]["status"] == 200
    assert [v.split(":", 1)[0] for v in tenant.violations] == [
        f"PATCH /v1.0/users/{LEE_ID} (in $batch) request"
    ]
    assert tenant.user(LEE_ID)["accountEnabled"] is True
    tenant.violations.clear()


@pytest.mark.asyncio
async def test_faults_apply_inside_a_batch_and_to_the_batch_itself(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    tenant.inject_fault("PATCH", f"/users/{LEE_ID}$", status=503, headers={"Retry-After": "3"})
    patch = {
        "id": "1",
        "method": "PATCH",
        "url": f"/users/{LEE_ID}",
        "headers": JSON,
        "body": {"accountEnabled": False},
    }

    inner = await graph.post("/v1.0/$batch", json={"requests": [patch]})

    [item] = inner.json()["responses"]
    assert (item["status"], item["headers"]["Retry-After"]) == (503, "3")
    assert tenant.user(LEE_ID)["accountEnabled"] is True

    tenant.inject_fault("POST", r"/\$batch$", status=429, headers={"Retry-After": "2"})
    whole = await graph.post("/v1.0/$batch", json={"requests": [patch]})

    assert whole.status_code == 429 and whole.headers["Retry-After"] == "2"
    assert tenant.user(LEE_ID)["accountEnabled"] is True


@pytest.mark.asyncio
async def test_depends_on_is_not_implemented_by_the_sandbox(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.post("/v1.0/$batch", json={"requests": [_step("1"), _step("2", dependsOn=["1"])]})

    assert answer.status_code == 501
    assert tenant.batched_requests == []


@pytest.mark.asyncio
async def test_a_batch_needs_a_token(tenant: SandboxTenant, anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.post("/v1.0/$batch", json={"requests": [_step()]})

    assert answer.status_code == 401
    assert tenant.batched_requests == []


@pytest.mark.asyncio
async def test_a_password_inside_a_batch_is_never_recorded(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    secret = "Batch-Secret-Passw0rd!"
    profile = {"forceChangePasswordNextSignIn": True, "password": secret}

    answer = await graph.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "PATCH",
                    "url": f"/users/{LEE_ID}",
                    "headers": JSON,
                    "body": {"passwordProfile": profile},
                },
                # Breaks the contract, so the validator's message is recorded: without the password.
                {
                    "id": "2",
                    "method": "PATCH",
                    "url": f"/users/{ADELE_ID}",
                    "headers": JSON,
                    "body": {"passwordProfile": profile, "accountEnabled": "x"},
                },
            ]
        },
    )

    assert _by_id(answer)["1"]["status"] == 204
    assert tenant.password_of(LEE_ID) == secret
    assert (
        secret
        not in repr(tenant.requests) + repr(tenant.batched_requests) + repr(tenant.violations) + answer.text
    )
    assert len(tenant.violations) == 1
    tenant.violations.clear()


# -- throttling inside batches -----------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def throttled() -> AsyncIterator[tuple[SandboxTenant, httpx.AsyncClient, Ticks]]:
    ticks = Ticks()
    async with SandboxTenant(DEMO_SCENARIO, throttling=True, throttle_clock=ticks) as sandbox:
        context = ssl.create_default_context(cafile=str(sandbox.ca_pem_path))
        async with httpx.AsyncClient(
            base_url=sandbox.authority_host, verify=context, trust_env=False
        ) as client:
            token = await client.post(
                f"/{sandbox.tenant_id}/oauth2/v2.0/token",
                data={
                    "client_id": sandbox.client_id,
                    "client_secret": sandbox.client_secret,
                    "grant_type": "client_credentials",
                    "scope": "https://graph.microsoft.com/.default",
                },
            )
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            yield sandbox, client, ticks
        assert sandbox.violations == []


@pytest.mark.asyncio
async def test_requests_inside_a_batch_are_throttled_one_by_one(
    throttled: tuple[SandboxTenant, httpx.AsyncClient, Ticks],
) -> None:
    tenant, graph, ticks = throttled
    throttle = tenant.throttle
    assert throttle is not None
    for _ in range(3000):  # the app's whole write quota for 150 s
        throttle.admit("PATCH", "/users/someone", {})

    answer = await graph.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {"id": "risk-1", "method": "GET", "url": f"/identityProtection/riskyUsers/{LEE_ID}"},
                {"id": "risk-2", "method": "GET", "url": f"/identityProtection/riskyUsers/{ADELE_ID}"},
                {
                    "id": "write",
                    "method": "PATCH",
                    "url": f"/users/{LEE_ID}",
                    "headers": JSON,
                    "body": {"accountEnabled": False},
                },
                {"id": "read", "method": "GET", "url": f"/users/{LEE_ID}?$select=id"},
            ]
        },
    )

    assert answer.status_code == 200
    items = _by_id(answer)
    # Identity Protection: one request per second per tenant, and no Retry-After.
    assert items["risk-1"]["status"] == 200
    assert items["risk-2"]["status"] == 429 and "Retry-After" not in items["risk-2"]["headers"]
    # Identity and access: the write quota is spent, reads still pass.
    assert items["write"]["status"] == 429
    assert int(items["write"]["headers"]["Retry-After"]) >= 1
    assert items["read"]["status"] == 200
    assert tenant.user(LEE_ID)["accountEnabled"] is True

    ticks.now += float(items["write"]["headers"]["Retry-After"])
    again = await graph.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {
                    "id": "write",
                    "method": "PATCH",
                    "url": f"/users/{LEE_ID}",
                    "headers": JSON,
                    "body": {"accountEnabled": False},
                }
            ]
        },
    )

    assert _by_id(again)["write"]["status"] == 204
