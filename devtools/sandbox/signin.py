"""Interactive sign-in on the sandbox tenant: OpenID Connect authorization code flow with PKCE.

What Microsoft's identity platform does, and what this module keeps true to (Microsoft Learn:
"Microsoft identity platform and OAuth 2.0 authorization code flow", "OpenID Connect on the
Microsoft identity platform", "ID token claims reference", "Developer guide to Conditional
Access authentication context"):

- ``GET /{tenant}/oauth2/v2.0/authorize`` with ``client_id``, ``response_type=code``, an exact
  registered ``redirect_uri``, ``scope`` holding ``openid``, ``state`` and ``nonce`` (both echoed:
  ``state`` on the redirect, ``nonce`` inside the ID token), ``code_challenge`` with
  ``code_challenge_method=S256`` (PKCE; the sandbox refuses ``plain``, which the bot never
  sends), ``prompt``, ``max_age``, ``login_hint`` and ``claims``. An unknown app or a redirect URI
  that is not registered is shown as an error page (AADSTS700016, AADSTS50011) and never
  redirected to; other mistakes are redirected back as ``error``/``error_description``.
- The ``claims`` request parameter asks for a Conditional Access authentication context, e.g.
  ``{"id_token": {"acrs": {"essential": true, "value": "c1"}}}`` (``values`` for several). The
  sandbox's Conditional Access requires MFA for every context: an MFA sign-in satisfies the
  contexts asked for, and the ID token's ``acrs`` lists them; a sign-in without MFA (the sandbox
  lets a person skip it, as a tenant without that policy would) gets no ``acrs``.
- ``POST /{tenant}/oauth2/v2.0/token`` with ``grant_type=authorization_code`` redeems a code once,
  within ten minutes, from the same client and ``redirect_uri``, and only with the
  ``code_verifier`` whose SHA-256 is the challenge (AADSTS501481 otherwise). The answer holds an
  ID token signed RS256 with a key published at the ``jwks_uri`` (``kid`` in its header), with
  ``aud`` (the client id), ``iss`` (``.../{tenant}/v2.0``), ``iat``/``nbf``/``exp``, ``tid``,
  ``oid``, ``sub`` (pairwise per app), ``preferred_username``, ``name``, ``nonce``, ``ver`` 2.0,
  and the claims the sandbox's app registration is configured to emit: ``auth_time``, ``amr``
  (``pwd``, ``mfa``) and ``acrs``.
- Every demo user signs in with :data:`DEMO_PASSWORD`; the MFA step takes :data:`DEMO_MFA_CODE`.
  A person of another organisation (:data:`FOREIGN_TENANT_ID`) can sign in too, as a multi-tenant
  authority would let them: their token names their own tenant, which the bot must refuse.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.sandbox.state import TenantState

DEMO_PASSWORD = "Sandbox-Demo-1"
DEMO_MFA_CODE = "246810"
FOREIGN_TENANT_ID = "0b7e1c4d-9a2f-4e8b-8c6d-3f2a1b0c9d8e"
CODE_LIFETIME_SECONDS = 600
ID_TOKEN_LIFETIME_SECONDS = 3600
PAGE_LIFETIME_SECONDS = 600


@dataclass(frozen=True)
class Person:
    """Who signs in: a user of the tenant, or of another organisation."""

    object_id: str
    upn: str
    name: str
    tenant_id: str


@dataclass
class Authorization:
    """One authorize request, from the sign-in form to the code."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str
    nonce: str
    code_challenge: str
    contexts: tuple[str, ...]
    login_hint: str
    expires: float
    response_mode: str = "query"
    person: Person | None = None


@dataclass
class IssuedCode:
    """An authorization code and everything its ID token will say."""

    authorization: Authorization
    person: Person
    amr: tuple[str, ...]
    acrs: tuple[str, ...]
    auth_time: int
    expires: float
    redeemed: bool = False


@dataclass
class SigningKey:
    """The tenant's token signing key (Entra ID publishes its keys at ``jwks_uri``)."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh RSA 2048 key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=secrets.token_urlsafe(20), private_key=key)

    def jwk(self, issuer: str) -> dict[str, Any]:
        """The public key as Entra's JWKS shows it."""
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": public["n"],
            "e": public["e"],
            "issuer": issuer,
        }


@dataclass
class SignInState:
    """What interactive sign-in remembers: registered redirect URIs, pages in flight, codes."""

    signing_key: SigningKey = field(default_factory=SigningKey.generate)
    redirect_uris: set[str] = field(default_factory=set)
    pending: dict[str, Authorization] = field(default_factory=dict)
    codes: dict[str, IssuedCode] = field(default_factory=dict)
    foreign_people: dict[str, Person] = field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _contexts(claims: str) -> tuple[str, ...] | None:
    """The authentication contexts the ``claims`` parameter asks for (None: it is malformed)."""
    if not claims:
        return ()
    try:
        parsed = json.loads(claims)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    found: list[str] = []
    for part in ("id_token", "access_token"):
        section = parsed.get(part)
        if section is None:
            continue
        if not isinstance(section, dict):
            return None
        acrs = section.get("acrs")
        if acrs is None:
            continue
        if not isinstance(acrs, dict):
            return None
        values = acrs.get("values", [acrs["value"]] if "value" in acrs else [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return None
        found += values
    return tuple(dict.fromkeys(found))


class SignInEndpoints:
    """aiohttp handlers for the authorize endpoint, its sign-in and MFA pages, and the code grant."""

    def __init__(self, state: TenantState, sign_in: SignInState) -> None:
        """Serve interactive sign-in for the tenant in ``state``."""
        self._state = state
        self._sign_in = sign_in

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the sandbox application."""
        return [
            web.get("/{tenant}/oauth2/v2.0/authorize", self.authorize),
            web.post("/{tenant}/login", self.password),
            web.post("/{tenant}/login/mfa", self.mfa),
        ]

    # -- the browser's side -----------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        """Check the request, then show the sign-in form."""
        state = self._state
        query = request.query
        if request.match_info["tenant"].lower() != state.tenant_id.lower():
            return _page("Sign in", "AADSTS90002: Tenant not found.", status=400)
        client_id = query.get("client_id", "")
        if client_id.lower() != state.client_id.lower():
            return _page(
                "Sign in",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{state.tenant_id}'.",
                status=400,
            )
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in self._sign_in.redirect_uris:
            return _page(
                "Sign in",
                "AADSTS50011: The redirect URI specified in the request does not match the redirect "
                f"URIs configured for the application '{state.client_id}'.",
                status=400,
            )
        app_state = query.get("state", "")
        response_mode = query.get("response_mode", "query")

        def back(error: str, description: str) -> web.Response:
            params = {"error": error, "error_description": description}
            if app_state:
                params["state"] = app_state
            return _respond(redirect_uri, "form_post" if response_mode == "form_post" else "query", params)

        if response_mode not in ("query", "form_post"):
            return back(
                "invalid_request", "AADSTS900144: response_mode must be query or form_post for a code."
            )

        if query.get("response_type") != "code":
            return back("unsupported_response_type", "AADSTS700054: response_type must be code.")
        if "openid" not in query.get("scope", "").split():
            return back("invalid_scope", "AADSTS70011: the scope must include openid to sign a person in.")
        challenge = query.get("code_challenge", "")
        if not challenge or query.get("code_challenge_method") != "S256":
            return back(
                "invalid_request",
                "AADSTS50143: a code_challenge with code_challenge_method S256 is required.",
            )
        contexts = _contexts(query.get("claims", ""))
        if contexts is None:
            return back("invalid_request", "AADSTS90017: the claims parameter is not valid JSON claims.")
        flow_id = secrets.token_urlsafe(24)
        self._sign_in.pending[flow_id] = Authorization(
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=query.get("scope", ""),
            state=app_state,
            nonce=query.get("nonce", ""),
            code_challenge=challenge,
            contexts=contexts,
            login_hint=query.get("login_hint", ""),
            expires=time.monotonic() + PAGE_LIFETIME_SECONDS,
            response_mode=response_mode,
        )
        return self._password_form(request, flow_id, self._sign_in.pending[flow_id])

    async def password(self, request: web.Request) -> web.Response:
        """The sign-in form was sent: check the person and password, then ask for MFA."""
        form = await request.post()
        flow_id = str(form.get("flow", ""))
        pending = self._live(flow_id)
        if pending is None:
            return _page(
                "Sign in", "This sign-in page has expired. Go back to the app and start again.", status=400
            )
        login = str(form.get("login", "")).strip()
        person = self._person(login)
        secret = str(form.get("passwd", ""))
        if person is None or not secrets.compare_digest(secret.encode(), DEMO_PASSWORD.encode()):
            return self._password_form(
                request, flow_id, pending, error="Your account or password is incorrect.", status=200
            )
        pending.person = person
        return self._mfa_form(request, flow_id, pending)

    async def mfa(self, request: web.Request) -> web.Response:
        """The MFA step: a code completes it; skipping signs in with the password alone."""
        form = await request.post()
        flow_id = str(form.get("flow", ""))
        pending = self._live(flow_id)
        if pending is None or pending.person is None:
            return _page(
                "Sign in", "This sign-in page has expired. Go back to the app and start again.", status=400
            )
        if form.get("skip"):
            amr: tuple[str, ...] = ("pwd",)
        elif secrets.compare_digest(str(form.get("otc", "")).strip().encode(), DEMO_MFA_CODE.encode()):
            amr = ("pwd", "mfa")
        else:
            return self._mfa_form(request, flow_id, pending, error="That code didn't work. Try again.")
        del self._sign_in.pending[flow_id]
        code = secrets.token_urlsafe(48)
        self._sign_in.codes[code] = IssuedCode(
            authorization=pending,
            person=pending.person,
            amr=amr,
            # The sandbox's Conditional Access asks MFA for every authentication context.
            acrs=pending.contexts if "mfa" in amr else (),
            auth_time=int(self._state.clock().timestamp()),
            expires=time.monotonic() + CODE_LIFETIME_SECONDS,
        )
        params = {"code": code, "session_state": str(uuid.uuid4())}
        if pending.state:
            params["state"] = pending.state
        return _respond(pending.redirect_uri, pending.response_mode, params)

    def _live(self, flow_id: str) -> Authorization | None:
        pending = self._sign_in.pending.get(flow_id)
        if pending is None or pending.expires < time.monotonic():
            return None
        return pending

    def _person(self, login: str) -> Person | None:
        lowered = login.lower()
        if lowered in self._sign_in.foreign_people:
            return self._sign_in.foreign_people[lowered]
        user = self._state.find_user(login) if "@" in login else None
        if user is None or user.get("accountEnabled") is False:
            return None
        return Person(
            object_id=str(user["id"]),
            upn=str(user["userPrincipalName"]),
            name=str(user.get("displayName") or user["userPrincipalName"]),
            tenant_id=self._state.tenant_id,
        )

    def _password_form(
        self,
        request: web.Request,
        flow_id: str,
        pending: Authorization,
        *,
        error: str = "",
        status: int = 200,
    ) -> web.Response:
        tenant = self._state.tenant_id
        hint = html.escape(pending.login_hint, quote=True)
        body = (
            f'<form method="post" action="/{tenant}/login">'
            f'<input type="hidden" name="flow" value="{flow_id}">'
            '<label for="login">Email or username</label>'
            f'<input id="login" name="login" type="email" autocomplete="username" value="{hint}" required>'
            '<label for="passwd">Password</label>'
            '<input id="passwd" name="passwd" type="password" autocomplete="current-password" required>'
            '<button type="submit">Sign in</button></form>'
            f"<p class=note>Sandbox tenant: every demo user's password is {DEMO_PASSWORD}.</p>"
        )
        return _page("Sign in", error, body=body, status=status)

    def _mfa_form(
        self, request: web.Request, flow_id: str, pending: Authorization, *, error: str = ""
    ) -> web.Response:
        tenant = self._state.tenant_id
        who = html.escape(pending.person.upn if pending.person else "")
        body = (
            f"<p>{who}</p><p>Enter the code displayed in your authenticator app.</p>"
            f'<form method="post" action="/{tenant}/login/mfa">'
            f'<input type="hidden" name="flow" value="{flow_id}">'
            '<label for="otc">Code</label>'
            '<input id="otc" name="otc" inputmode="numeric" autocomplete="one-time-code">'
            '<button type="submit" name="verify" value="1">Verify</button>'
            '<button type="submit" name="skip" value="1" formnovalidate>Skip (password only)</button>'
            "</form>"
            f"<p class=note>Sandbox tenant: the code is {DEMO_MFA_CODE}. Skipping signs you in "
            "without MFA, so no authentication context is satisfied.</p>"
        )
        return _page("Verify your identity", error, body=body)

    # -- the app's side: the authorization code grant ----------------------------------------

    def redeem(
        self, field_: dict[str, str], issuer_origin: str
    ) -> tuple[int, str, int, str] | dict[str, Any]:
        """Redeem a code (after client authentication); an error as (status, error, code, text)."""
        code = field_.get("code", "")
        issued = self._sign_in.codes.get(code)
        if issued is None:
            return 400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
        if issued.redeemed:
            return 400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed."
        if issued.expires < time.monotonic():
            return (
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired.",
            )
        authorization = issued.authorization
        if field_.get("client_id", "").lower() != authorization.client_id.lower():
            return 400, "invalid_grant", 70000, "The code was issued to another application."
        if field_.get("redirect_uri", "") != authorization.redirect_uri:
            return (
                400,
                "invalid_grant",
                50148,
                "The redirect_uri does not match the one used to get the code.",
            )
        verifier = field_.get("code_verifier", "")
        if (
            not verifier
            or _b64(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
            != authorization.code_challenge
        ):
            return (
                400,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        issued.redeemed = True
        return {
            "token_type": "Bearer",
            "scope": "openid profile email User.Read",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            # A delegated token for Graph the sandbox never accepts: the bot uses only the ID token.
            "access_token": secrets.token_urlsafe(32),
            "id_token": self._id_token(issued, issuer_origin),
            "client_info": _b64(
                json.dumps({"uid": issued.person.object_id, "utid": issued.person.tenant_id}).encode()
            ),
        }

    def _id_token(self, issued: IssuedCode, origin: str) -> str:
        person = issued.person
        now = int(self._state.clock().timestamp())
        claims: dict[str, Any] = {
            "aud": issued.authorization.client_id,
            "iss": f"{origin}/{person.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME_SECONDS,
            "auth_time": issued.auth_time,
            "amr": list(issued.amr),
            "name": person.name,
            "oid": person.object_id,
            "preferred_username": person.upn,
            "sub": _b64(
                hashlib.sha256(f"{person.object_id}:{issued.authorization.client_id}".encode()).digest()
            ),
            "tid": person.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if issued.authorization.nonce:
            claims["nonce"] = issued.authorization.nonce
        if issued.acrs:
            claims["acrs"] = list(issued.acrs)
        key = self._sign_in.signing_key
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"})


def default_foreign_people() -> dict[str, Person]:
    """A person of another organisation whose object id equals an approver's in the demo tenant."""
    person = Person(
        object_id="7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a52",
        upn="megan.bowen@fabrikam.example",
        name="Megan Bowen (Fabrikam)",
        tenant_id=FOREIGN_TENANT_ID,
    )
    return {person.upn: person}


_STYLE = (
    "body{font:16px/1.4 system-ui,sans-serif;margin:0;padding:24px;max-width:440px}"
    "label{display:block;margin-top:12px}input{width:100%;box-sizing:border-box;padding:8px;font:inherit}"
    "button{margin-top:16px;margin-right:8px;padding:8px 16px;font:inherit}"
    ".error{color:#a4262c}.note{color:#555;font-size:14px}"
)


def _respond(redirect_uri: str, mode: str, params: dict[str, str]) -> web.Response:
    """The answer back to the app: a redirect with a query, or (form_post) a page that posts it."""
    if mode != "form_post":
        return _redirect(f"{redirect_uri}?{urlencode(params)}")
    fields = "".join(
        f'<input type="hidden" name="{html.escape(k, quote=True)}" value="{html.escape(v, quote=True)}">'
        for k, v in params.items()
    )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Working...</title></head>"
        '<body><form method="POST" name="hiddenform" action="'
        f'{html.escape(redirect_uri, quote=True)}">{fields}'
        "<noscript><p>Script is disabled. Click Submit to continue.</p></noscript>"
        '<button type="submit">Submit</button></form>'
        "<script>document.forms[0].submit();</script></body></html>"
    )
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _page(title: str, error: str, *, body: str = "", status: int = 200) -> web.Response:
    error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Contoso (sandbox)</h1><h2>{html.escape(title)}</h2>{error_html}{body}</body></html>"
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


__all__ = [
    "DEMO_MFA_CODE",
    "DEMO_PASSWORD",
    "FOREIGN_TENANT_ID",
    "SignInEndpoints",
    "SignInState",
    "default_foreign_people",
]
