"""The managed-identity token endpoint of an Azure host, as Container Apps and App Service serve it.

A container app with a managed identity gets two environment variables, ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER``; a token is ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...``
(``client_id=`` picks a user-assigned identity) with the header ``X-IDENTITY-HEADER``. The answer
carries ``access_token``, ``expires_on`` (Unix seconds, as a string), ``resource``, ``token_type``
and ``client_id``. Sources: learn.microsoft.com/azure/container-apps/managed-identity ("Connect
to Azure services in code", REST endpoint) and learn.microsoft.com/azure/app-service/
overview-managed-identity ("REST endpoint reference").

The sandbox's identity is its Graph app: the system-assigned identity and the user-assigned
identity whose client id is the app's both get the app's (opaque) Graph tokens.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import timedelta

from aiohttp import web

from devtools.sandbox.state import TenantState

API_VERSION = "2019-08-01"
# Graph, Azure Monitor (the audit stream to the SIEM) and the database: the identity's roles.
RESOURCES = (
    "https://graph.microsoft.com",
    "https://graph.microsoft.com/",
    "https://monitor.azure.com",
    "https://monitor.azure.com/",
    # Azure Database for PostgreSQL with Entra ID authentication: the token is the password.
    "https://ossrdbms-aad.database.windows.net",
    "https://ossrdbms-aad.database.windows.net/",
)
TOKEN_LIFETIME_SECONDS = 86399  # managed-identity tokens live about a day
PATH = "/msi/token"


class ManagedIdentityEndpoint:
    """``GET /msi/token``: the host's identity endpoint, guarded by its identity header."""

    def __init__(self, state: TenantState, header: str | None = None) -> None:
        """Serve tokens for ``state``'s app to callers that send ``header`` (random by default)."""
        self._state = state
        self.header = header or secrets.token_urlsafe(24)

    def routes(self) -> list[web.RouteDef]:
        """The route to add to the sandbox application."""
        return [web.get(PATH, self.token)]

    async def token(self, request: web.Request) -> web.Response:
        """A token for the requested resource, or the endpoint's error shape."""
        given = request.headers.get("X-IDENTITY-HEADER", "")
        if not hmac.compare_digest(given.encode(), self.header.encode()):
            return _error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        if request.query.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}.")
        resource = request.query.get("resource", "")
        if resource not in RESOURCES:
            return _error(400, f"No token for resource {resource!r}: this identity has no role there.")
        for other in ("mi_res_id", "object_id"):
            if other in request.query:
                return _error(400, f"No managed identity matches {other}={request.query[other]!r}.")
        client_id = request.query.get("client_id")
        if client_id is not None and client_id.lower() != self._state.client_id.lower():
            return _error(
                400, f"No user-assigned managed identity with client id {client_id!r} on this host."
            )
        token = secrets.token_urlsafe(32)
        self._state.tokens[token] = self._state.clock() + timedelta(seconds=TOKEN_LIFETIME_SECONDS)
        return web.json_response(
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + TOKEN_LIFETIME_SECONDS),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self._state.client_id,
            }
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status)
