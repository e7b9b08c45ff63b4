"""TokenProvider: real msal against the sandbox authority over real HTTPS."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import GraphAuthError
from bot.graph import TokenProvider
from devtools.sandbox import SandboxTenant

from .helpers import token_requests


@pytest.mark.asyncio
async def test_token_is_acquired_then_served_from_msal_cache(
    tenant: SandboxTenant, tokens: TokenProvider
) -> None:
    first = await tokens.token()
    second = await tokens.token()

    assert first == second
    assert token_requests(tenant) == 1
    discovery = [r for r in tenant.requests if r.path.endswith("/openid-configuration")]
    assert len(discovery) == 1
    form = next(r.form for r in tenant.requests if r.form is not None)
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://graph.microsoft.com/.default"


@pytest.mark.asyncio
async def test_certificate_credential_signs_a_client_assertion(tenant: SandboxTenant, tmp_path: Path) -> None:
    certificate = tenant.add_client_certificate(tmp_path)
    provider = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        certificate_path=certificate.private_key_path,
        certificate_thumbprint=certificate.thumbprint,
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    try:
        assert await provider.token()
    finally:
        await provider.aclose()

    form = next(r.form for r in tenant.requests if r.form is not None)
    assert "client_secret" not in form
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.mark.asyncio
async def test_an_unregistered_certificate_is_refused(tenant: SandboxTenant, tmp_path: Path) -> None:
    registered = tenant.add_client_certificate(tmp_path)
    provider = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        certificate_path=registered.private_key_path,
        certificate_thumbprint="00" * 20,
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    try:
        with pytest.raises(GraphAuthError, match="AADSTS700027"):
            await provider.token()
    finally:
        await provider.aclose()


@pytest.mark.asyncio
async def test_wrong_secret_says_what_entra_said_but_not_the_secret(
    tenant: SandboxTenant,
) -> None:
    secret = "wrong-secret-value-123"
    provider = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        client_secret=secret,
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    try:
        with pytest.raises(GraphAuthError) as caught:
            await provider.token()
    finally:
        await provider.aclose()

    error = caught.value
    assert error.code == "invalid_client"
    assert "invalid_client: AADSTS7000215: Invalid client secret provided." in error.message
    assert tenant.client_id in error.message
    assert secret not in str(error)


@pytest.mark.asyncio
async def test_an_unreachable_authority_is_a_graph_auth_error(tenant: SandboxTenant) -> None:
    provider = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        client_secret=tenant.client_secret,
        authority_host="https://127.0.0.1:9",
        ca_bundle=str(tenant.ca_pem_path),
    )
    try:
        with pytest.raises(GraphAuthError, match="No Graph token for app"):
            await provider.token()
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"client_secret": "s", "certificate_path": "key.pem", "certificate_thumbprint": "AB"},
        {"certificate_path": "key.pem"},
    ],
)
def test_exactly_one_complete_credential_is_required(credentials: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="certificate"):
        TokenProvider("tenant", "client", **credentials)
