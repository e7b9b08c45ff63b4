"""The Entra ID side of the sandbox: OpenID discovery and the client-credentials token endpoint."""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import UTC, timedelta
from typing import Any

from aiohttp import web

from devtools.sandbox.assertion import AssertionRejected, verify_client_assertion
from devtools.sandbox.signin import SignInEndpoints, SignInState
from devtools.sandbox.state import TenantState

TOKEN_LIFETIME_SECONDS = 3599
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _origin(request: web.Request) -> str:
    # Answer with the host the caller used (127.0.0.1 or localhost), as a real authority would.
    return f"{request.scheme}://{request.host}"


class IdentityEndpoints:
    """aiohttp handlers for ``/{tenant}/v2.0/.well-known/openid-configuration`` and the token URL."""

    def __init__(self, state: TenantState, sign_in: SignInState | None = None) -> None:
        """Serve the tenant and app registration held in ``state`` (and interactive sign-in)."""
        self._state = state
        self._sign_in_state = sign_in or SignInState()
        self._sign_in = SignInEndpoints(state, self._sign_in_state)

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the sandbox application."""
        return [
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            web.get("/{tenant}/discovery/v2.0/keys", self.keys),
            web.post("/{tenant}/oauth2/v2.0/token", self.token),
            *self._sign_in.routes(),
        ]

    async def openid_configuration(self, request: web.Request) -> web.Response:
        """The discovery document msal reads before asking for a token."""
        tenant = request.match_info["tenant"]
        if not self._known_tenant(tenant):
            return self._error(request, 400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{_origin(request)}/{self._state.tenant_id}"
        return web.json_response(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "claims_supported": [
                    "sub",
                    "iss",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "acr",
                    "acrs",
                    "amr",
                    "nonce",
                    "preferred_username",
                    "name",
                    "tid",
                    "ver",
                    "oid",
                    "email",
                ],
                "claims_parameter_supported": True,
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        """The key ID tokens are signed with (the sandbox's access tokens are opaque)."""
        issuer = f"{_origin(request)}/{self._state.tenant_id}/v2.0"
        return web.json_response({"keys": [self._sign_in_state.signing_key.jwk(issuer)]})

    async def token(self, request: web.Request) -> web.Response:
        """The client-credentials grant with a client secret or a certificate assertion."""
        state = self._state
        tenant = request.match_info["tenant"]
        form = await request.post()
        field = {k: str(v) for k, v in form.items()}
        if not self._known_tenant(tenant):
            return self._error(request, 400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        grant = field.get("grant_type")
        if grant not in ("client_credentials", "authorization_code"):
            return self._error(
                request,
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type "
                f"'{field.get('grant_type', '')}'; the sandbox issues client_credentials and "
                "authorization_code only.",
            )
        client_id = field.get("client_id", "")
        if client_id.lower() != state.client_id.lower():
            return self._error(
                request,
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{state.tenant_id}'.",
            )
        if grant == "authorization_code":
            problem = self._credential_problem(request, field)
            if problem is not None:
                return problem
            redeemed = self._sign_in.redeem(field, _origin(request))
            if isinstance(redeemed, tuple):
                status, error, code, message = redeemed
                return self._error(request, status, error, code, message)
            return web.json_response(redeemed)
        scope = field.get("scope", "")
        if not any(s.endswith("/.default") for s in scope.split()):
            return self._error(
                request,
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier.",
            )
        problem = self._credential_problem(request, field)
        if problem is not None:
            return problem
        token = secrets.token_urlsafe(32)
        state.tokens[token] = state.clock() + timedelta(seconds=TOKEN_LIFETIME_SECONDS)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "ext_expires_in": TOKEN_LIFETIME_SECONDS,
                "access_token": token,
            }
        )

    def _credential_problem(self, request: web.Request, field: dict[str, str]) -> web.Response | None:
        state = self._state
        if "client_secret" in field:
            if hmac.compare_digest(field["client_secret"].encode(), state.client_secret.encode()):
                return None
            return self._error(
                request,
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{state.client_id}'.",
            )
        if "client_assertion" in field:
            if field.get("client_assertion_type") != JWT_BEARER:
                return self._error(
                    request, 400, "invalid_request", 50027, "client_assertion_type is not jwt-bearer."
                )
            try:
                verify_client_assertion(
                    field["client_assertion"],
                    client_id=state.client_id,
                    audience=f"{_origin(request)}/{state.tenant_id}/oauth2/v2.0/token",
                    certificates=state.certificates,
                    now=state.clock(),
                )
            except AssertionRejected as exc:
                return self._error(request, 401, "invalid_client", exc.code, exc.message)
            return None
        return self._error(
            request,
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() == self._state.tenant_id.lower()

    def _error(self, request: web.Request, status: int, error: str, code: int, message: str) -> web.Response:
        """Entra ID's error shape, AADSTS code and trace ids included."""
        now = self._state.clock().astimezone(UTC)
        trace_id = str(uuid.uuid4())
        correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": error,
            "error_description": f"AADSTS{code}: {message} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{_origin(request)}/error?code={code}",
        }
        return web.json_response(body, status=status)
