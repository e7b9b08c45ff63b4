"""App-only tokens for Microsoft Graph through msal: client secret, certificate or managed identity."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal

import msal
import requests

from bot.errors import GraphAuthError

GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
PUBLIC_CLOUD_AUTHORITY_HOST = "https://login.microsoftonline.com"

ManagedIdentityKind = Literal["system", "user"]


class TokenProvider:
    """Acquires app-only access tokens with msal's ``ConfidentialClientApplication``, or with its
    ``ManagedIdentityClient`` when the bot runs as an Azure managed identity (no secret at all).

    msal keeps the token in its in-memory cache and renews it shortly before expiry, so calling
    :meth:`token` before every request is cheap. msal is synchronous; it runs in a worker thread.
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        certificate_path: str | Path | None = None,
        certificate_thumbprint: str | None = None,
        authority_host: str = PUBLIC_CLOUD_AUTHORITY_HOST,
        ca_bundle: str | None = None,
        *,
        scope: str = GRAPH_DEFAULT_SCOPE,
        managed_identity: ManagedIdentityKind | None = None,
    ) -> None:
        """Describe the app registration; nothing is fetched until the first :meth:`token`.

        Give either ``client_secret``, or both ``certificate_path`` (a PEM private key) and
        ``certificate_thumbprint`` (the SHA-1 thumbprint shown in the app registration), or
        ``managed_identity``: ``"system"`` (the host's system-assigned identity) or ``"user"``
        (the user-assigned identity whose client id is ``client_id``). A managed identity's token
        comes from the host's identity endpoint (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` on
        Container Apps and App Service, else the instance metadata service), never from a secret.
        ``ca_bundle`` is for a private authority such as the sandbox tenant.
        """
        has_certificate = certificate_path is not None or certificate_thumbprint is not None
        credentials = (client_secret is not None) + has_certificate + (managed_identity is not None)
        if credentials != 1:
            raise ValueError(
                "TokenProvider needs exactly one credential: a client secret, a certificate "
                "(certificate_path and certificate_thumbprint), or a managed identity"
            )
        if has_certificate and (certificate_path is None or not certificate_thumbprint):
            raise ValueError(
                "a certificate credential needs both certificate_path and certificate_thumbprint"
            )
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._certificate_path = Path(certificate_path) if certificate_path is not None else None
        self._certificate_thumbprint = certificate_thumbprint
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._ca_bundle = ca_bundle
        self._scope = scope
        self._managed_identity = managed_identity
        self._app: Any = None
        self._app_lock = asyncio.Lock()
        # msal blocks: it runs in threads of its own, never queued behind botbuilder's Bot
        # Connector requests in the event loop's default executor.
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graph-token")
        # Our own session, so that aclose() can release its pooled connections.
        self._session = requests.Session()
        if ca_bundle is not None:
            # requests lets REQUESTS_CA_BUNDLE (set on these machines) override session.verify
            # unless trust_env is off; msal's own verify= does not reach tenant discovery.
            self._session.verify = ca_bundle
            self._session.trust_env = False

    async def aclose(self) -> None:
        """Release the HTTP connections msal holds open; call once at shutdown."""
        # Closing pooled sockets does not wait on the network: done here, not in a worker thread
        # (at shutdown every worker of the default executor may be busy with a slow Bot Connector).
        self._session.close()
        self._threads.shutdown(wait=False)

    async def token(self) -> str:
        """An access token for the scope; raises :class:`GraphAuthError` when msal fails."""
        app = await self._application()
        try:
            loop = asyncio.get_running_loop()
            if self._managed_identity is not None:
                # The identity endpoint speaks of resources, not scopes.
                resource = self._scope.removesuffix("/.default")
                result = await loop.run_in_executor(
                    self._threads, partial(app.acquire_token_for_client, resource=resource)
                )
            else:
                result = await loop.run_in_executor(
                    self._threads, partial(app.acquire_token_for_client, scopes=[self._scope])
                )
        except Exception as exc:
            # msal raises requests' errors and its own; all mean "no token" to the caller.
            raise self._failure(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, dict) or "access_token" not in result:
            details = result if isinstance(result, dict) else {}
            error = details.get("error", "no_token")
            description = details.get("error_description", "msal returned no access token")
            raise self._failure(f"{error}: {description}", code=str(error))
        return str(result["access_token"])

    async def _application(self) -> Any:
        # Building the app performs tenant discovery over the network, so it happens lazily, in
        # a thread, once; the lock stops two first callers from building two apps and caches.
        async with self._app_lock:
            if self._app is None:
                try:
                    self._app = await asyncio.get_running_loop().run_in_executor(
                        self._threads, self._build_application
                    )
                except GraphAuthError:
                    raise
                except Exception as exc:
                    raise self._failure(f"{type(exc).__name__}: {exc}") from exc
            return self._app

    def _build_application(self) -> Any:
        if self._managed_identity is not None:
            identity: Any = (
                msal.UserAssignedManagedIdentity(client_id=self._client_id)
                if self._managed_identity == "user"
                else msal.SystemAssignedManagedIdentity()
            )
            return msal.ManagedIdentityClient(identity, http_client=self._session)
        credential: str | dict[str, str]
        if self._certificate_path is not None and self._certificate_thumbprint:
            try:
                private_key = self._certificate_path.read_text(encoding="ascii")
            except OSError as exc:
                raise self._failure(
                    f"cannot read the certificate key {self._certificate_path}: {exc.strerror}"
                ) from exc
            credential = {"private_key": private_key, "thumbprint": self._certificate_thumbprint}
        else:
            assert self._client_secret is not None  # guaranteed by __init__
            credential = self._client_secret
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=credential,
            authority=self._authority,
            http_client=self._session,
            # A private authority (a CA of our own) is unknown to Microsoft's instance discovery.
            instance_discovery=self._ca_bundle is None,
        )

    def _failure(self, detail: str, *, code: str = "") -> GraphAuthError:
        if self._client_secret:
            # Defence in depth: msal and the authority never echo the secret, but a message that
            # reaches a card or a log must not carry it even if one day they do.
            detail = detail.replace(self._client_secret, "***")
        source = (
            f"the {self._managed_identity}-assigned managed identity"
            if self._managed_identity is not None
            else f"authority {self._authority}"
        )
        return GraphAuthError(
            f"No Graph token for app {self._client_id} in tenant {self._tenant_id} ({source}): {detail}",
            code=code,
        )
