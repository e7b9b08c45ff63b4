"""``SandboxTenant``: a local Entra ID tenant and Microsoft Graph over TLS on loopback."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from devtools.sandbox import identities
from devtools.sandbox.assertion import thumbprint_header
from devtools.sandbox.contract import DEFAULT_EXTENSIONS, Contract, load_contract
from devtools.sandbox.graph_api import ALERT_SCHEMA, RISKY_USER_SCHEMA, USER_SCHEMA
from devtools.sandbox.ingestion import IngestionEndpoint
from devtools.sandbox.managed_identity import PATH as MANAGED_IDENTITY_PATH
from devtools.sandbox.scenario import ScenarioBuilder, identity_extras, load_scenario
from devtools.sandbox.server import GRAPH_PREFIX, SandboxServer
from devtools.sandbox.signin import SignInState, default_foreign_people
from devtools.sandbox.state import Fault, JSONObject, ProviderAccount, RecordedRequest, TenantState
from devtools.sandbox.throttling import GraphThrottle, Throttled
from devtools.sandbox.tls import IssuedClientCertificate, ServerTLS, issue_client_certificate, make_server_tls

DEMO_TENANT_ID = "5f1c9b8e-2d4a-4c3e-9a7b-0d6e8f1a2b3c"
DEMO_CLIENT_ID = "9e3b7a21-6c4d-4f0e-8b2a-1c5d7e9f0a4b"
DEMO_CLIENT_SECRET = "sandbox-only-secret-not-for-real-tenants"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SandboxTenant:
    """A real HTTPS server on loopback that acts as Entra ID (tokens) and Graph (``/v1.0``).

    Every Graph request and response is validated against the Graph contract; violations are
    listed in :attr:`violations` and answered 500 ``SandboxContractViolation``.
    """

    def __init__(
        self,
        scenario: Mapping[str, Any] | Path | str,
        *,
        tenant_id: str = DEMO_TENANT_ID,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        cert_dir: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
        contract_extensions: Sequence[Path] = DEFAULT_EXTENSIONS,
        sync_interval: float | None = None,
        app_display_name: str = "remediation-bot",
        throttling: bool = False,
        throttle_clock: Callable[[], float] | None = None,
    ) -> None:
        """Load the scenario (a dict or a YAML/JSON path); nothing listens until :meth:`start`.

        ``clock`` is the tenant's "now": scenario times (``minutes_ago``), new alerts and token
        expiry use it. ``cert_dir`` receives the CA PEM (a temporary directory by default).
        ``sync_interval`` (seconds of ``clock``) runs :meth:`run_directory_sync` on its own, the
        first time a Graph request arrives after each interval; None (the default) leaves it to
        the test. ``app_display_name`` is the name Defender shows on the app's alert comments.
        ``throttling`` answers 429 where Microsoft documents that Graph throttles (Identity
        Protection, security alerts, identity and access; see :mod:`devtools.sandbox.throttling`).
        ``throttle_clock`` (monotonic seconds) is the throttling's clock, ``time.monotonic`` by
        default: a test on virtual time gives its own, so that honouring a ``Retry-After``
        takes no real time.
        """
        if sync_interval is not None and sync_interval <= 0:
            raise ValueError("sync_interval must be a positive number of seconds")
        self._scenario = load_scenario(scenario)
        self._state = TenantState(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            clock=clock,
            app_display_name=app_display_name,
            sync_interval=sync_interval,
        )
        self._throttle = (
            GraphThrottle(users=lambda: len(self._state.users), clock=throttle_clock or time.monotonic)
            if throttling
            else None
        )
        self._sign_in = SignInState(foreign_people=default_foreign_people())
        self._cert_dir = cert_dir
        self._own_cert_dir: Path | None = None
        self._extensions = tuple(contract_extensions)
        self._contract: Contract | None = None
        self._builder: ScenarioBuilder | None = None
        self._tls: ServerTLS | None = None
        self._runner: web.AppRunner | None = None
        self._server: SandboxServer | None = None
        self._origin = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Seed the state from the scenario and listen on ``host:port`` (0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("the sandbox tenant is already running")
        # The first contract build of the process takes ~0.5 s; keep the loop responsive.
        self._contract = await asyncio.to_thread(load_contract, self._extensions)
        self._seed(self._contract)
        directory = self._cert_dir
        if directory is None:
            directory = self._own_cert_dir = Path(tempfile.mkdtemp(prefix="sandbox-tenant-"))
        directory.mkdir(parents=True, exist_ok=True)
        self._tls = await asyncio.to_thread(make_server_tls, directory)
        self._server = SandboxServer(self._state, self._contract, self._throttle, self._sign_in)
        app = self._server.application()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._tls.ssl_context)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._origin = f"https://{shown}:{bound_port}"

    async def stop(self) -> None:
        """Stop listening and delete the temporary certificate directory (if it made one)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            self._server.abort_connections()
            self._server = None
        if self._own_cert_dir is not None:
            shutil.rmtree(self._own_cert_dir, ignore_errors=True)
            self._own_cert_dir = None

    async def __aenter__(self) -> SandboxTenant:
        """Start on a free loopback port."""
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        """Stop."""
        await self.stop()

    def _seed(self, contract: Contract) -> None:
        builder = self._builder = ScenarioBuilder(
            tenant_id=self._state.tenant_id,
            user_properties=contract.properties(USER_SCHEMA),
            alert_properties=contract.properties(ALERT_SCHEMA),
            risky_user_properties=contract.properties(RISKY_USER_SCHEMA),
        )
        now = self._state.clock()
        state = self._state
        state.users.clear()
        state.alerts.clear()
        state.risky_users.clear()
        for spec in self._scenario.get("users") or []:
            user = builder.user(spec, now)
            state.users[user["id"]] = user
        for index, spec in enumerate(self._scenario.get("alerts") or []):
            alert = builder.alert(spec, state.users, now, index)
            state.alerts[alert["id"]] = alert
        for spec in self._scenario.get("riskyUsers") or []:
            risky = builder.risky_user(spec, state.users, now)
            state.risky_users[risky["id"]] = risky
        state.risk_detections.clear()
        for risky in state.risky_users.values():
            for detection in builder.risk_detections(risky, state.alerts.values()):
                state.risk_detections[detection["id"]] = detection
        state.identities.clear()
        state.identity_actions.clear()
        extras = identity_extras(self._scenario.get("identityAccounts") or [], state.users)
        for user in state.users.values():
            identity = builder.identity(user, extras.get(str(user["id"])))
            state.identities[identity.id.lower()] = identity
        state.last_directory_sync = now
        state.groups.clear()
        state.directory_roles.clear()
        state.members.clear()
        group_specs = list(self._scenario.get("groups") or [])
        role_specs = list(self._scenario.get("directoryRoles") or [])
        containers: list[tuple[str, str, Any]] = []
        for spec in group_specs:
            group = builder.group(spec)
            state.groups[group["id"]] = group
            containers.append((group["id"], f"group {group['displayName']!r}", spec))
        for spec in role_specs:
            role = builder.directory_role(spec)
            state.directory_roles[role["id"]] = role
            containers.append((role["id"], f"directoryRole {role['displayName']!r}", spec))
        # Members are resolved once every group exists: a group may name one defined after it.
        for container_id, owner, spec in containers:
            state.members[container_id] = builder.members(
                owner, spec.get("members") or [], state.users, state.groups
            )

    # -- where to point msal and httpx -----------------------------------------------------

    @property
    def tenant_id(self) -> str:
        """The directory (tenant) id."""
        return self._state.tenant_id

    @property
    def client_id(self) -> str:
        """The app registration's client id."""
        return self._state.client_id

    @property
    def client_secret(self) -> str:
        """The app registration's client secret."""
        return self._state.client_secret

    @property
    def authority_host(self) -> str:
        """``https://127.0.0.1:PORT`` (msal ``authority_host``)."""
        return self._require_origin()

    @property
    def authority(self) -> str:
        """``https://127.0.0.1:PORT/<tenant_id>`` (msal ``authority``)."""
        return f"{self._require_origin()}/{self._state.tenant_id}"

    @property
    def graph_base_url(self) -> str:
        """``https://127.0.0.1:PORT/v1.0``."""
        return self._require_origin() + GRAPH_PREFIX

    @property
    def managed_identity_environment(self) -> dict[str, str]:
        """``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` as a Container Apps host sets them."""
        if self._server is None:
            raise RuntimeError("the sandbox tenant is not running")
        return {
            "IDENTITY_ENDPOINT": self._require_origin() + MANAGED_IDENTITY_PATH,
            "IDENTITY_HEADER": self._server.managed_identity.header,
        }

    @property
    def ingestion(self) -> IngestionEndpoint:
        """The Logs Ingestion API endpoint (its ``received`` records, in order)."""
        if self._server is None:
            raise RuntimeError("the sandbox tenant is not running")
        return self._server.ingestion

    @property
    def ca_pem_path(self) -> Path:
        """The PEM file of the CA that signed the server certificate."""
        if self._tls is None:
            raise RuntimeError("start the sandbox tenant first")
        return self._tls.ca_pem_path

    def _require_origin(self) -> str:
        if not self._origin:
            raise RuntimeError("start the sandbox tenant first")
        return self._origin

    # -- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, oldest first (identity and Graph)."""
        return self._state.requests

    @property
    def batched_requests(self) -> list[RecordedRequest]:
        """Every request answered inside a ``POST /$batch``, oldest first (not in :attr:`requests`,
        which lists HTTP exchanges: the batch itself is one)."""
        return self._state.batched_requests

    @property
    def throttle(self) -> GraphThrottle | None:
        """The throttling emulation (None unless ``throttling=True``); tests may spend its quotas."""
        return self._throttle

    @property
    def throttled(self) -> list[Throttled]:
        """Every request answered 429 by the emulated Graph throttling, oldest first."""
        return [] if self._throttle is None else self._throttle.refused

    @property
    def violations(self) -> list[str]:
        """Contract violations seen so far: method, path, request/response and the message."""
        return self._state.violations

    # -- state for tests -------------------------------------------------------------------

    def user(self, id_or_upn: str) -> JSONObject:
        """A copy of the user's current state (by object id or UPN); KeyError if unknown."""
        user = self._state.find_user(id_or_upn)
        if user is None:
            raise KeyError(id_or_upn)
        return copy.deepcopy(user)

    def alerts(self) -> list[JSONObject]:
        """Copies of every alert, in insertion order."""
        return [copy.deepcopy(a) for a in self._state.alerts.values()]

    def risky_user(self, user_id: str) -> JSONObject:
        """A copy of the risky user (its id is the user's object id); KeyError if none."""
        for key, risky in self._state.risky_users.items():
            if key.lower() == user_id.lower():
                return copy.deepcopy(risky)
        raise KeyError(user_id)

    def risk_detections(self) -> list[JSONObject]:
        """Copies of every risk detection, in seeding order."""
        return [copy.deepcopy(d) for d in self._state.risk_detections.values()]

    def identity_account(self, key: str) -> JSONObject:
        """The Defender for Identity identity as Graph shows it, by its id or its user's id or UPN."""
        record = self._state.find_identity(key)
        if record is None:
            raise KeyError(key)
        return identities.render(record, self._state)

    def provider_account(self, key: str, identity_provider: str) -> ProviderAccount:
        """A copy of what ``identity_provider`` holds for the identity (``key`` as above).

        Graph does not show it (enabled in AD or Okta, password change required, sessions
        revoked); tests read it to see what an invokeAction did. KeyError if there is none.
        """
        record = self._state.find_identity(key)
        account = record.account(identity_provider) if record is not None else None
        if account is None:
            raise KeyError(f"{key}: no {identity_provider} account")
        return dataclasses.replace(account)

    def identity_actions(self) -> list[JSONObject]:
        """The Action Center's history: every invokeAction carried out, oldest first."""
        return copy.deepcopy(self._state.identity_actions)

    def password_of(self, id_or_upn: str) -> str | None:
        """The password last set on a user through Graph (tests search for leaks with it)."""
        user = self._state.find_user(id_or_upn)
        return None if user is None else self._state.passwords.get(str(user["id"]))

    def issued_tokens(self) -> list[str]:
        """Every access token the tenant issued (tests search for leaks with them)."""
        return list(self._state.tokens)

    def add_redirect_uri(self, uri: str) -> None:
        """Register a web redirect URI on the app (Authentication > Web > Redirect URIs)."""
        self._sign_in.redirect_uris.add(uri)

    def id_token_signing_key(self) -> Any:
        """The private key ID tokens are signed with (tests forge tokens with other keys)."""
        return self._sign_in.signing_key.private_key

    def run_directory_sync(self) -> None:
        """Run one Entra Connect sync cycle now: AD's enabled state overwrites synced users'.

        A cloud-side ``accountEnabled=false`` of a synced user flips back to true, unless its AD
        account was disabled (through Defender for Identity), which this cycle copies to Entra.
        """
        self._state.run_directory_sync()

    def add_alert(self, alert_spec: Mapping[str, Any]) -> JSONObject:
        """Add an alert (scenario syntax) created and updated "now"; returns a copy of it."""
        if self._builder is None:
            raise RuntimeError("start the sandbox tenant first")
        now = self._state.clock()
        alert = self._builder.alert(alert_spec, self._state.users, now, len(self._state.alerts))
        if alert["id"] in self._state.alerts:
            raise ValueError(f"alert {alert['id']} already exists")
        self._state.alerts[alert["id"]] = alert
        return copy.deepcopy(alert)

    def add_member(self, container_id: str, member: str) -> None:
        """Make ``member`` (a UPN, user id or group id) a direct member of a group or role."""
        key = container_id.lower()
        if key not in self._state.groups and key not in self._state.directory_roles:
            raise KeyError(container_id)
        if self._builder is None:
            raise RuntimeError("start the sandbox tenant first")
        added = self._builder.members(key, [member], self._state.users, self._state.groups)
        self._state.members.setdefault(key, set()).update(added)

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | str | None = None,
        times: int = 1,
        delay: float = 0,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` (or ``*``) and ``path_regex``.

        ``path_regex`` is searched in the full path (``/v1.0/users/...`` or the token path).
        ``body`` None gives Graph's usual error for ``status``; a dict is sent as JSON and, like
        every Graph answer, validated against the contract; a string is sent as text/html (a
        gateway page, not Graph) and not validated. ``delay`` seconds pass before answering.
        ``status`` None gives the real answer ``delay`` seconds late: the operation takes place,
        and a client that times out meanwhile never hears of it (an outcome-unknown case).
        Faults apply after authentication and request validation.
        """
        self._state.faults.append(
            Fault(
                method=method.upper(),
                path_pattern=re.compile(path_regex),
                status=status,
                headers=dict(headers or {}),
                body=body,
                times=times,
                delay=delay,
            )
        )

    def clear_faults(self) -> None:
        """Drop every injected fault not used up yet (Graph "recovers")."""
        self._state.faults.clear()

    def add_client_certificate(self, directory: Path) -> IssuedClientCertificate:
        """Register a new certificate credential on the app; its key and PEM go to ``directory``."""
        if self._tls is None:
            raise RuntimeError("start the sandbox tenant first")
        issued = issue_client_certificate(self._tls.ca, directory, f"app-{self.client_id[:8]}")
        certificates = self._state.certificates
        certificates[thumbprint_header(bytes.fromhex(issued.thumbprint))] = issued.certificate_pem
        certificates[thumbprint_header(bytes.fromhex(issued.sha256_thumbprint))] = issued.certificate_pem
        return issued
