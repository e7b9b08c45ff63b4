"""The sandbox holds itself and its callers to the Graph contract."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

from devtools.sandbox import SUBSET_PATH, SUBSET_SHA256, SandboxTenant, load_contract
from devtools.sandbox.contract import Contract, merge_extension

# The shared reference sits next to the project: ``../shared/`` from the project root.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_SUBSET = PROJECT_ROOT / ".." / "shared" / "reference" / "graph" / "graph-v1.0-subset.yaml"
ADELE = "adele.vance@contoso.com"


def test_contract_copy_is_the_shared_subset_byte_for_byte() -> None:
    copy = SUBSET_PATH.read_bytes()
    assert hashlib.sha256(copy).hexdigest() == SUBSET_SHA256
    if SHARED_SUBSET.exists():
        assert copy == SHARED_SUBSET.read_bytes()


def test_extension_adds_operations_and_refuses_clashes() -> None:
    base: dict[str, Any] = {"paths": {"/users/{user-id}": {"get": {"operationId": "a"}}}}
    merge_extension(
        base,
        {"paths": {"/users/{user-id}": {"delete": {"operationId": "b"}}, "/groups": {"get": {}}}},
        source="ext.yaml",
    )
    assert set(base["paths"]["/users/{user-id}"]) == {"get", "delete"}
    assert "/groups" in base["paths"]
    with pytest.raises(ValueError, match=re.escape("GET /users/{user-id} is already in the contract")):
        merge_extension(base, {"paths": {"/users/{user-id}": {"get": {"operationId": "c"}}}}, source="x")


def test_contract_is_built_once_per_file_list() -> None:
    assert load_contract() is load_contract()


@pytest.mark.asyncio
async def test_valid_requests_pass(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    got = await graph.get(f"/v1.0/users/{ADELE}", params={"$select": "id,accountEnabled"})
    assert got.status_code == 200
    patched = await graph.patch(f"/v1.0/users/{got.json()['id']}", json={"accountEnabled": False})
    assert patched.status_code == 204
    assert tenant.user(ADELE)["accountEnabled"] is False
    assert tenant.violations == []


@pytest.mark.asyncio
async def test_invalid_patch_body_is_a_recorded_violation(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.patch(f"/v1.0/users/{ADELE}", json={"accountEnabled": "no"})

    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "SandboxContractViolation"
    assert len(tenant.violations) == 1
    violation = tenant.violations[0]
    assert violation.startswith(f"PATCH /v1.0/users/{ADELE} request: ")
    assert "'no' is not of type 'boolean'" in violation
    assert tenant.user(ADELE)["accountEnabled"] is True
    tenant.violations.clear()


@pytest.mark.asyncio
async def test_invalid_response_is_a_recorded_violation(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    tenant.inject_fault("GET", r"/v1\.0/users/", status=200, body={"id": 5, "accountEnabled": "yes"})

    answer = await graph.get(f"/v1.0/users/{ADELE}")

    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "SandboxContractViolation"
    assert [v.split(":", 1)[0] for v in tenant.violations] == [f"GET /v1.0/users/{ADELE} response 200"]
    assert "5 is not of type 'string'" in tenant.violations[0]
    tenant.violations.clear()


@pytest.mark.asyncio
async def test_an_operation_outside_the_contract_is_a_violation(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.get("/v1.0/groups")

    assert answer.status_code == 500
    assert tenant.violations == [
        "GET /v1.0/groups request: Path not found for https://graph.microsoft.com/v1.0/groups"
    ]
    tenant.violations.clear()


@pytest.mark.asyncio
async def test_a_contract_operation_the_sandbox_lacks_answers_501(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    answer = await graph.get("/v1.0/security/incidents")

    assert answer.status_code == 501
    assert answer.json()["error"]["code"] == "SandboxNotImplemented"


@pytest.mark.asyncio
async def test_graph_needs_a_bearer_token_from_the_tenant(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    missing = await anonymous.get(f"/v1.0/users/{ADELE}")
    forged = await anonymous.get(f"/v1.0/users/{ADELE}", headers={"Authorization": "Bearer not-issued-here"})

    assert missing.status_code == forged.status_code == 401
    assert missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert forged.json()["error"]["message"].startswith("Access token validation failure")


@pytest.mark.asyncio
async def test_responses_carry_graph_headers(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    answer = await graph.get(f"/v1.0/users/{ADELE}", headers={"client-request-id": "abc-123"})

    assert answer.headers["client-request-id"] == "abc-123"
    assert answer.headers["request-id"] == tenant.requests[-1].request_id
    assert answer.headers["content-type"].startswith("application/json;odata.metadata=minimal")


def _python_calls(work: Callable[[], object]) -> int:
    """How many Python functions ``work`` calls: a cost that is the same on every machine."""
    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(previous)
    return calls


def test_validation_cost_stays_small() -> None:
    """Guards the timing noted in the report: a request validation is a few milliseconds.

    Counted in Python function calls, not seconds, so that the guard does not depend on the
    machine: a validation makes about 11 000 calls (about 12 ms), building the validators (done
    once per process) over a million.
    """
    contract = load_contract()
    request = Contract.wire_request(
        "GET",
        "/security/alerts_v2",
        [("$filter", "status eq 'new'"), ("$top", "10"), ("$select", "id,title")],
        {"Authorization": "Bearer x"},
        "",
        b"",
    )
    contract.request_problems(request)
    problems: list[list[str]] = []
    calls = _python_calls(lambda: problems.extend(contract.request_problems(request) for _ in range(10)))
    assert problems == [[]] * 10
    assert calls / 10 < 50_000
