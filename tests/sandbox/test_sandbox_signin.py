"""Interactive sign-in: authorize, the sign-in and MFA pages, the code grant with PKCE, ID tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from devtools.sandbox import SandboxTenant
from devtools.sandbox.signin import DEMO_MFA_CODE, DEMO_PASSWORD, FOREIGN_TENANT_ID

REDIRECT = "https://bot.example/approve/callback"
APPROVER = "adm-megan.bowen@contoso.com"


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def _authorize(
    tenant: SandboxTenant, client: httpx.AsyncClient, **overrides: str
) -> tuple[httpx.Response, str]:
    verifier = secrets.token_urlsafe(48)
    params = {
        "client_id": tenant.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid profile offline_access",
        "state": "the-state",
        "nonce": "the-nonce",
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
        "claims": json.dumps({"id_token": {"acrs": {"essential": True, "value": "c1"}}}),
    }
    params.update(overrides)
    answer = await client.get(f"/{tenant.tenant_id}/oauth2/v2.0/authorize?{urlencode(params)}")
    return answer, verifier


def _flow(page: httpx.Response) -> str:
    found = re.search(r'name="flow" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def _sign_in(
    tenant: SandboxTenant, client: httpx.AsyncClient, login: str, *, mfa: bool, **overrides: str
) -> tuple[dict[str, list[str]], str]:
    page, verifier = await _authorize(tenant, client, **overrides)
    assert page.status_code == 200
    mfa_page = await client.post(
        f"/{tenant.tenant_id}/login", data={"flow": _flow(page), "login": login, "passwd": DEMO_PASSWORD}
    )
    assert "authenticator" in mfa_page.text
    step = {"otc": DEMO_MFA_CODE, "verify": "1"} if mfa else {"skip": "1"}
    done = await client.post(f"/{tenant.tenant_id}/login/mfa", data={"flow": _flow(mfa_page), **step})
    assert done.status_code == 302
    location = done.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query), verifier


async def _redeem(
    tenant: SandboxTenant, client: httpx.AsyncClient, code: str, verifier: str
) -> httpx.Response:
    return await client.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "scope": "openid profile offline_access",
        },
    )


async def _verify(tenant: SandboxTenant, client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    keys = (await client.get(f"/{tenant.tenant_id}/discovery/v2.0/keys")).json()
    key = jwt.PyJWKSet.from_dict(keys)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=tenant.client_id,
        # The tenant runs on the test's clock: times are checked against it below, not now.
        options={"verify_iss": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["exp"] - claims["iat"] == 3600
    return claims


@pytest.mark.asyncio
async def test_mfa_sign_in_gets_a_signed_id_token_with_the_context_asked_for(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    tenant.add_redirect_uri(REDIRECT)
    query, verifier = await _sign_in(tenant, anonymous, APPROVER, mfa=True)
    assert query["state"] == ["the-state"]

    answer = await _redeem(tenant, anonymous, query["code"][0], verifier)

    assert answer.status_code == 200, answer.text
    claims = await _verify(tenant, anonymous, answer.json()["id_token"])
    assert claims["iss"] == f"{tenant.authority}/v2.0"
    assert claims["tid"] == tenant.tenant_id
    assert claims["oid"] == "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a52"
    assert claims["preferred_username"] == APPROVER
    assert claims["name"] == "Megan Bowen (admin)"
    assert claims["nonce"] == "the-nonce"
    assert claims["acrs"] == ["c1"]
    assert claims["amr"] == ["pwd", "mfa"]
    assert isinstance(claims["auth_time"], int)
    config = (await anonymous.get(f"/{tenant.tenant_id}/v2.0/.well-known/openid-configuration")).json()
    assert config["claims_parameter_supported"] is True
    assert "acrs" in config["claims_supported"]


@pytest.mark.asyncio
async def test_sign_in_without_mfa_satisfies_no_context(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    tenant.add_redirect_uri(REDIRECT)
    query, verifier = await _sign_in(tenant, anonymous, APPROVER, mfa=False)

    claims = await _verify(
        tenant, anonymous, (await _redeem(tenant, anonymous, query["code"][0], verifier)).json()["id_token"]
    )

    assert claims["amr"] == ["pwd"]
    assert "acrs" not in claims


@pytest.mark.asyncio
async def test_a_code_needs_its_verifier_and_is_redeemed_once(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    tenant.add_redirect_uri(REDIRECT)
    query, verifier = await _sign_in(tenant, anonymous, APPROVER, mfa=True)
    code = query["code"][0]

    wrong = await _redeem(tenant, anonymous, code, secrets.token_urlsafe(48))
    right = await _redeem(tenant, anonymous, code, verifier)
    again = await _redeem(tenant, anonymous, code, verifier)

    assert wrong.status_code == 400
    assert wrong.json()["error_codes"] == [501481]
    assert right.status_code == 200
    assert again.status_code == 400
    assert again.json()["error_codes"] == [54005]


@pytest.mark.asyncio
async def test_unregistered_redirect_uri_and_unknown_app_are_never_redirected_to(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    tenant.add_redirect_uri(REDIRECT)
    elsewhere, _ = await _authorize(tenant, anonymous, redirect_uri="https://evil.example/cb")
    stranger, _ = await _authorize(tenant, anonymous, client_id="00000000-0000-0000-0000-000000000000")
    plain, _ = await _authorize(tenant, anonymous, code_challenge_method="plain")
    bad_claims, _ = await _authorize(tenant, anonymous, claims="{not json")

    assert elsewhere.status_code == 400 and "AADSTS50011" in elsewhere.text
    assert stranger.status_code == 400 and "AADSTS700016" in stranger.text
    for refused in (plain, bad_claims):
        assert refused.status_code == 302
        back = parse_qs(urlsplit(refused.headers["Location"]).query)
        assert back["error"] == ["invalid_request"]
        assert back["state"] == ["the-state"]


@pytest.mark.asyncio
async def test_wrong_password_is_refused_and_another_tenants_person_gets_their_own_tenant(
    tenant: SandboxTenant, anonymous: httpx.AsyncClient
) -> None:
    tenant.add_redirect_uri(REDIRECT)
    page, _ = await _authorize(tenant, anonymous)
    wrong = await anonymous.post(
        f"/{tenant.tenant_id}/login", data={"flow": _flow(page), "login": APPROVER, "passwd": "guess"}
    )
    assert "incorrect" in wrong.text

    query, verifier = await _sign_in(tenant, anonymous, "megan.bowen@fabrikam.example", mfa=True)
    claims = await _verify(
        tenant, anonymous, (await _redeem(tenant, anonymous, query["code"][0], verifier)).json()["id_token"]
    )
    assert claims["tid"] == FOREIGN_TENANT_ID
    assert claims["iss"].endswith(f"/{FOREIGN_TENANT_ID}/v2.0")
