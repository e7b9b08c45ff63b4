"""Signing a person in with Entra ID for the approval page: OpenID Connect through msal.

msal's ``ConfidentialClientApplication`` runs the authorization code flow as the bot's own app
registration (``GRAPH_CLIENT_ID`` and its secret or certificate): ``initiate_auth_code_flow``
makes the PKCE verifier (S256), ``state`` and ``nonce``; ``acquire_token_by_auth_code_flow``
checks ``state`` and redeems the code with the verifier. msal no longer validates ID tokens, so
:meth:`EntraSignIn.complete` does, as the OpenID Connect core spec and Microsoft's "ID token
claims reference" ask: the RS256 signature with a key from the tenant's JWKS (found through its
discovery document), ``iss`` exactly the configured tenant's issuer, ``aud`` our client id,
``tid`` the configured tenant, ``nonce`` the one of this flow, and ``exp``/``nbf``/``iat``
against the bot's clock. A step-up asks for a Conditional Access authentication context with the
``claims`` parameter (``{"id_token": {"acrs": {"essential": true, "value": "c1"}}}``) and for a
fresh sign-in with ``prompt=login`` and ``max_age``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import msal
import requests

from bot.domain.policy import StepUp

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(minutes=2)
JWKS_LIFETIME = timedelta(hours=6)
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}\Z")
_AADSTS = re.compile(r"\bAADSTS[0-9]{1,9}\b")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


class SignInError(Exception):
    """A sign-in that does not prove who the person is; ``message`` is safe to show them."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class SignedIn:
    """Who signed in, and how (from a validated ID token)."""

    object_id: str
    tenant_id: str
    name: str
    upn: str
    acrs: tuple[str, ...]
    amr: tuple[str, ...]
    auth_time: datetime | None


# msal ships no type information, so its classes are Any to mypy and subclassing one needs the ignore.
class _NoTokenCache(msal.TokenCache):  # type: ignore[misc]
    """The page needs the ID token once; nothing about the person is kept in memory."""

    def add(self, event: Any, **kwargs: Any) -> None:
        return None


def claims_for(step_up: StepUp | None) -> str | None:
    """The ``claims`` request parameter asking for ``step_up``'s authentication context."""
    if step_up is None:
        return None
    return json.dumps({"id_token": {"acrs": {"essential": True, "value": step_up.context}}})


class EntraSignIn:
    """The approval page's OpenID Connect client."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        redirect_uri: str,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime],
        client_secret: str | None = None,
        certificate_path: str | None = None,
        certificate_thumbprint: str | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        ca_bundle: str | None = None,
    ) -> None:
        """Describe the app registration; nothing is fetched until the first sign-in."""
        self._tenant_id = tenant_id.strip()
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._http = http
        self._clock = clock
        self._secret = client_secret
        self._certificate_path = certificate_path
        self._thumbprint = certificate_thumbprint
        self._authority = f"{authority_host.rstrip('/')}/{self._tenant_id}"
        self._ca_bundle = ca_bundle
        self._session = requests.Session()
        if ca_bundle:
            self._session.verify = ca_bundle
            self._session.trust_env = False
        self._app: Any = None
        self._lock = asyncio.Lock()
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, Any] = {}
        self._keys_read: datetime | None = None

    @property
    def tenant_id(self) -> str:
        """The one tenant whose people may sign in (lower-case)."""
        return self._tenant_id.lower()

    @property
    def redirect_uri(self) -> str:
        """Where Entra ID sends the person back (registered on the app)."""
        return self._redirect_uri

    async def aclose(self) -> None:
        """Release msal's and our own HTTP connections."""
        await asyncio.to_thread(self._session.close)
        await self._http.aclose()

    async def begin(self, *, step_up: StepUp | None) -> dict[str, Any]:
        """A new auth code flow (keep it for :meth:`complete`); its ``auth_uri`` is where to go."""
        app = await self._application()
        # form_post: the code comes back in a POST body, never in a URL that logs and history keep.
        kwargs: dict[str, Any] = {
            "scopes": [],
            "redirect_uri": self._redirect_uri,
            "response_mode": "form_post",
        }
        if step_up is not None:
            kwargs["claims_challenge"] = claims_for(step_up)
            kwargs["prompt"] = "login"
            kwargs["max_age"] = int(step_up.max_age.total_seconds())
        flow: dict[str, Any] = await asyncio.to_thread(app.initiate_auth_code_flow, **kwargs)
        return flow

    async def check_redirect_uri(self) -> tuple[bool | None, str]:
        """Whether Entra ID accepts our redirect URI for this app, by opening its sign-in page.

        A harmless GET of the authorize endpoint (nobody signs in): Entra ID shows AADSTS50011
        for a redirect URI the app does not list and AADSTS700016 for an unknown app. Returns
        (True, detail), (False, detail) or (None, why it could not tell).
        """
        try:
            flow = await self.begin(step_up=None)
            answer = await self._http.get(str(flow["auth_uri"]))
        except Exception as exc:
            return None, f"the sign-in page could not be opened: {type(exc).__name__}: {exc}"
        text = answer.text
        if "AADSTS50011" in text:
            return False, (
                f"Entra ID refuses the redirect URI {self._redirect_uri} (AADSTS50011): add it under "
                "the app registration's Authentication › Web › Redirect URIs"
            )
        if "AADSTS700016" in text:
            return False, f"Entra ID does not know the app {self._client_id} in this tenant (AADSTS700016)"
        if answer.status_code >= 400:
            return None, f"the sign-in page answered {answer.status_code}"
        return True, f"Entra ID accepts {self._redirect_uri} for app {self._client_id}"

    async def complete(self, flow: Mapping[str, Any], response: Mapping[str, str]) -> SignedIn:
        """Redeem the code Entra ID sent back and validate the ID token; raise SignInError."""
        if response.get("error"):
            # Only Entra ID's codes are shown: its description is free text that came through the
            # browser, and the page never repeats what a form post said.
            description = response.get("error_description", "")
            log.warning(
                "approval page: Entra ID refused the sign-in: %r %r",
                response["error"][:64],
                description[:300],
            )
            error = response["error"] if _ERROR_CODE.match(response["error"]) else "error"
            aadsts = _AADSTS.search(description)
            code = f", {aadsts.group(0)}" if aadsts else ""
            raise SignInError(f"Entra ID did not sign you in ({error}{code}). Open the link again.")
        app = await self._application()
        try:
            result = await asyncio.to_thread(app.acquire_token_by_auth_code_flow, dict(flow), dict(response))
        except RuntimeError as exc:  # msal's own nonce check
            log.warning("approval page: ID token refused by msal: %s", exc)
            raise SignInError("The ID token does not belong to this sign-in (nonce).", status=403) from None
        except ValueError as exc:  # state mismatch, a missing code: msal's "probably CSRF"
            log.warning("approval page: sign-in response refused by msal: %s", exc)
            raise SignInError("This sign-in response does not belong to your sign-in; start again.") from None
        except (requests.RequestException, OSError) as exc:
            log.error("approval page: the token endpoint did not answer: %s", exc)
            raise SignInError("Entra ID could not be reached; try again.", status=503) from None
        if not isinstance(result, dict) or "id_token" not in result:
            details = result if isinstance(result, dict) else {}
            log.warning(
                "approval page: code redemption failed: %s %s",
                details.get("error"),
                details.get("error_description", "")[:300],
            )
            raise SignInError("Entra ID did not confirm this sign-in; start again.")
        # msal sends the SHA-256 (hex) of the flow's nonce, which the ID token must echo.
        nonce = str(flow.get("nonce", ""))
        expected = hashlib.sha256(nonce.encode("ascii", "replace")).hexdigest() if nonce else ""
        return await self.validate(str(result["id_token"]), nonce=expected)

    async def validate(self, id_token: str, *, nonce: str) -> SignedIn:
        """The person an ID token names, once every check passed; raise SignInError otherwise."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise SignInError("The ID token is malformed.") from None
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise SignInError("The ID token is not signed the way Entra ID signs.")
        discovery = await self._discovery_document()
        key = await self._key(str(header["kid"]), str(discovery["jwks_uri"]))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=["RS256"],
                audience=self._client_id,
                issuer=str(discovery["issuer"]),
                # Times are checked below against the bot's own clock.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "aud", "iss"],
                },
            )
        except jwt.InvalidIssuerError:
            raise SignInError(
                "This sign-in is from another organisation; only ours may use this page.", status=403
            ) from None
        except jwt.PyJWTError as exc:
            raise SignInError(f"The ID token was refused: {exc}.", status=403) from None
        if claims.get("aud") != self._client_id:
            # PyJWT accepts a list naming us among others; Entra ID's ID tokens name one audience
            # (OpenID Connect core 3.1.3.7: several need an azp, which this page never expects).
            raise SignInError("The ID token was issued to another application.", status=403)
        tenant = str(claims.get("tid", ""))
        if tenant.lower() != self._tenant_id.lower():
            raise SignInError(
                "This sign-in is from another organisation; only ours may use this page.", status=403
            )
        if not nonce or claims.get("nonce") != nonce:
            raise SignInError("The ID token does not belong to this sign-in (nonce).", status=403)
        now = self._clock()
        exp = _time(claims.get("exp"))
        iat = _time(claims.get("iat"))
        nbf = _time(claims.get("nbf")) if "nbf" in claims else iat
        if exp is None or iat is None or nbf is None:
            raise SignInError("The ID token's times are malformed.", status=403)
        if now - CLOCK_SKEW >= exp or now + CLOCK_SKEW < nbf or now + CLOCK_SKEW < iat:
            raise SignInError("The ID token has expired or is not valid yet; sign in again.", status=403)
        object_id = claims.get("oid")
        if not isinstance(object_id, str) or not _GUID.match(object_id):
            raise SignInError("The ID token names nobody (no object id).", status=403)
        return SignedIn(
            object_id=object_id.lower(),
            tenant_id=tenant.lower(),
            name=_text(claims.get("name")),
            upn=_text(claims.get("preferred_username")),
            acrs=_strings(claims.get("acrs")),
            amr=_strings(claims.get("amr")),
            auth_time=_time(claims.get("auth_time")),
        )

    # -- Entra ID's metadata ------------------------------------------------------------------

    async def _discovery_document(self) -> dict[str, Any]:
        if self._discovery is None:
            url = f"{self._authority}/v2.0/.well-known/openid-configuration"
            document = await self._get_json(url)
            if not isinstance(document.get("issuer"), str) or not isinstance(document.get("jwks_uri"), str):
                raise SignInError("Entra ID's discovery document is incomplete; try again.", status=503)
            self._discovery = document
        return self._discovery

    async def _key(self, kid: str, jwks_uri: str) -> Any:
        now = self._clock()
        stale = self._keys_read is None or now - self._keys_read > JWKS_LIFETIME
        # Keys roll over: an unknown key id reads the set again (at most once a minute).
        retry = self._keys_read is None or now - self._keys_read > timedelta(minutes=1)
        if stale or (kid not in self._keys and retry):
            document = await self._get_json(jwks_uri)
            try:
                keys = jwt.PyJWKSet.from_dict(document)
            except jwt.PyJWTError:
                raise SignInError(
                    "Entra ID's signing keys could not be read; try again.", status=503
                ) from None
            self._keys = {k.key_id: k.key for k in keys.keys if k.key_id}
            self._keys_read = now
        if kid not in self._keys:
            raise SignInError("The ID token is signed with a key Entra ID does not publish.", status=403)
        return self._keys[kid]

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            answer = await self._http.get(url)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.error("approval page: %s could not be read: %s", url, exc)
            raise SignInError("Entra ID could not be reached; try again.", status=503) from None
        if not isinstance(document, dict):
            raise SignInError("Entra ID answered something unexpected; try again.", status=503)
        return document

    async def _application(self) -> Any:
        async with self._lock:
            if self._app is None:
                self._app = await asyncio.to_thread(self._build)
            return self._app

    def _build(self) -> Any:
        credential: str | dict[str, str]
        if self._certificate_path and self._thumbprint:
            private_key = Path(self._certificate_path).read_text(encoding="ascii")
            credential = {"private_key": private_key, "thumbprint": self._thumbprint}
        else:
            credential = self._secret or ""
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=credential,
            authority=self._authority,
            http_client=self._session,
            token_cache=_NoTokenCache(),
            instance_discovery=not self._ca_bundle,
        )


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str:
    return value[:256] if isinstance(value, str) else ""


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value[:64],)
    if isinstance(value, list):
        return tuple(v[:64] for v in value[:32] if isinstance(v, str))
    return ()
