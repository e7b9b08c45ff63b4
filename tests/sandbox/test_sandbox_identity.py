"""The Entra ID side: discovery, the token endpoint, token lifetime."""

from __future__ import annotations

import httpx
import pytest

from devtools.sandbox import SandboxTenant

from .helpers import Clock

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def _form(tenant: SandboxTenant, **overrides: str) -> dict[str, str]:
    form = {
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        "grant_type": "client_credentials",
        "scope": GRAPH_SCOPE,
    }
    form.update(overrides)
    return form


@pytest.mark.asyncio
async def test_discovery_document_points_at_this_tenant(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    answer = await anonymous.get(f"/{tenant.tenant_id}/v2.0/.well-known/openid-configuration")

    config = answer.json()
    assert config["issuer"] == f"{tenant.authority}/v2.0"
    assert config["token_endpoint"] == f"{tenant.authority}/oauth2/v2.0/token"
    assert config["authorization_endpoint"].startswith(tenant.authority)
    assert config["jwks_uri"].startswith(tenant.authority)


@pytest.mark.asyncio
async def test_client_secret_gets_an_opaque_bearer_token(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    answer = await anonymous.post(f"/{tenant.tenant_id}/oauth2/v2.0/token", data=_form(tenant))

    body = answer.json()
    assert answer.status_code == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert len(body["access_token"]) > 30


@pytest.mark.asyncio
async def test_wrong_secret_is_401_invalid_client_without_echoing_it(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    answer = await anonymous.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token", data=_form(tenant, client_secret="guess-1")
    )

    body = answer.json()
    assert answer.status_code == 401
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "guess-1" not in answer.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "status", "error", "code"),
    [
        ({"client_id": "00000000-0000-0000-0000-000000000001"}, 400, "unauthorized_client", 700016),
        ({"scope": "User.Read"}, 400, "invalid_scope", 1002012),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
)
async def test_token_request_mistakes_get_entra_errors(
    tenant: SandboxTenant,
    anonymous: httpx.AsyncClient,
    overrides: dict[str, str],
    status: int,
    error: str,
    code: int,
) -> None:
    answer = await anonymous.post(f"/{tenant.tenant_id}/oauth2/v2.0/token", data=_form(tenant, **overrides))

    assert (answer.status_code, answer.json()["error"], answer.json()["error_codes"]) == (
        status,
        error,
        [code],
    )


@pytest.mark.asyncio
async def test_unknown_tenant_is_refused(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration")

    assert answer.status_code == 400
    assert answer.json()["error_codes"] == [90002]


@pytest.mark.asyncio
async def test_an_expired_token_is_refused_by_graph(
    tenant: SandboxTenant, graph: httpx.AsyncClient, clock: Clock
) -> None:
    clock.advance(hours=1)

    answer = await graph.get("/v1.0/users/lee.gu@contoso.com")

    assert answer.status_code == 401
    assert "expired" in answer.json()["error"]["message"]
