"""Graph through the host's managed identity: real msal against the sandbox's identity endpoint.

A container app with a managed identity gets ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``; msal's
``ManagedIdentityClient`` reads them. No secret exists anywhere in this configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest

from bot.errors import GraphAuthError
from bot.graph import TokenProvider
from devtools.sandbox import SandboxTenant
from tests.support.graph_fixtures import sandbox_graph

from .helpers import RecordingSleep


def identity_requests(tenant: SandboxTenant) -> list[Mapping[str, str]]:
    return [r.query for r in tenant.requests if r.path == "/msi/token"]


def managed(tenant: SandboxTenant, kind: str, client_id: str | None = None) -> TokenProvider:
    return TokenProvider(
        tenant.tenant_id,
        client_id or tenant.client_id,
        managed_identity=kind,  # type: ignore[arg-type]
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )


@pytest.fixture
def on_azure_host(tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in tenant.managed_identity_environment.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("on_azure_host")
async def test_a_user_assigned_identity_reads_graph_with_no_secret(
    tenant: SandboxTenant, http: httpx.AsyncClient, sleeps: RecordingSleep
) -> None:
    provider = managed(tenant, "user")
    try:
        graph = sandbox_graph(tenant, http, provider, sleeps)
        user = await graph.get_user("alex.wilber@contoso.com", ["id"])
        assert user["id"]
        assert await provider.token() == await provider.token()  # msal's cache, not a new request
    finally:
        await provider.aclose()

    (query,) = identity_requests(tenant)
    assert query["resource"] == "https://graph.microsoft.com"
    assert query["client_id"] == tenant.client_id
    # No secret, no assertion, no client-credentials grant at the authority.
    assert [r for r in tenant.requests if r.form is not None] == []


@pytest.mark.usefixtures("on_azure_host")
async def test_a_system_assigned_identity_names_no_client(tenant: SandboxTenant) -> None:
    provider = managed(tenant, "system")
    try:
        assert await provider.token()
    finally:
        await provider.aclose()

    (query,) = identity_requests(tenant)
    assert "client_id" not in query and query["api-version"] == "2019-08-01"


@pytest.mark.usefixtures("on_azure_host")
async def test_an_identity_the_host_does_not_have_is_a_graph_auth_error(tenant: SandboxTenant) -> None:
    provider = managed(tenant, "user", client_id="00000000-0000-4000-8000-00000000dead")
    try:
        with pytest.raises(GraphAuthError) as caught:
            await provider.token()
    finally:
        await provider.aclose()

    assert "user-assigned managed identity" in str(caught.value)
    assert "00000000-0000-4000-8000-00000000dead" in str(caught.value)


async def test_a_wrong_identity_header_is_refused(
    tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = tenant.managed_identity_environment
    monkeypatch.setenv("IDENTITY_ENDPOINT", environment["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    provider = managed(tenant, "system")
    try:
        with pytest.raises(GraphAuthError) as caught:
            await provider.token()
    finally:
        await provider.aclose()

    assert "No Graph token" in str(caught.value) and "not-the-header" not in str(caught.value)
    assert len(identity_requests(tenant)) == 1


def test_a_managed_identity_is_the_only_credential() -> None:
    with pytest.raises(ValueError, match="exactly one credential"):
        TokenProvider("t", "c", client_secret="s", managed_identity="system")
