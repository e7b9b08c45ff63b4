"""``remediation-bot doctor``: prove a real configuration works before go-live, without changing anything.

It uses the bot's own code on the real settings (:func:`~bot.config.settings.load_settings`,
:class:`~bot.graph.TokenProvider`, :class:`~bot.graph.GraphClient`, the store) and prints one
line per check:

- ``OK``: proven, by a token or a harmless read (``$top=1``, one user, a membership check);
- ``MISSING``: Graph refused (401/403) or answered without what the permission gives: the line
  names the permission from :mod:`bot.graph.permissions`; or the channel is not registered;
- ``ERROR``: anything else went wrong, with the message;
- ``NOT CHECKED``: a write permission. Proving it would take a write (disabling, revoking,
  commenting), so the line only says what needs it. When the Graph token is a JWT, its ``roles``
  claim (the application permissions granted with admin consent) is read: a write permission it
  does not list is ``MISSING``;
- ``SKIPPED``: nothing to check (e.g. the policy names no groups), or an earlier check failed;
- ``WARNING``: works, but looks wrong (the token grants permissions the bot does not need).

The exit code is 1 when any check is ``MISSING`` or ``ERROR``, else 0.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.config.policy_file import policy_from_settings
from bot.config.settings import Settings
from bot.domain.models import AlertSource
from bot.domain.policy import Policy, Principals
from bot.errors import ConfigError, GraphError, GraphForbidden, GraphNotFound, RemediationError
from bot.graph import GraphClient, JSONObject, TokenProvider, build_http_client
from bot.graph.permissions import (
    OPERATIONS,
    USER_PATH,
    USER_PROPERTY_PERMISSIONS,
    OperationPermission,
)
from bot.graph.signin import EntraSignIn
from bot.store import open_store, redact_url
from bot.tenant.identities import USER_FIELDS
from bot.web.app import database_password, graph_tokens

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
# The Bot Framework's token authority for MultiTenant bots (SingleTenant bots use their tenant).
BOT_FRAMEWORK_TENANT = "botframework.com"
# identityAccounts has no $top in the client: filter by a UPN (one identity, or none) instead.
PROBE_UPN = "remediation-bot-doctor@invalid.example"

_ALERTS = ("GET", "/security/alerts_v2")
_RISKY_USERS = ("GET", "/identityProtection/riskyUsers")
_USER = ("GET", USER_PATH)
_ROLES = ("GET", "/users/{user-id}/transitiveMemberOf/microsoft.graph.directoryRole")
_IDENTITIES = ("GET", "/security/identities/identityAccounts")
_MEMBER_GROUPS = ("POST", "/users/{user-id}/checkMemberGroups")
_RISK_DETECTIONS = ("GET", "/identityProtection/riskDetections")
# POSTs that only read: proven by a probe, never listed as writes.
_READING_POSTS = frozenset({_MEMBER_GROUPS})


class Status(enum.Enum):
    """The outcome of one check; see the module docstring."""

    OK = "OK"
    MISSING = "MISSING"
    ERROR = "ERROR"
    NOT_CHECKED = "NOT CHECKED"
    SKIPPED = "SKIPPED"
    WARNING = "WARNING"


FAILING = frozenset({Status.MISSING, Status.ERROR})


@dataclass(frozen=True)
class Check:
    """One line of the report: ``subject`` is a permission name or what was checked."""

    status: Status
    subject: str
    detail: str

    def line(self) -> str:
        """``STATUS       subject: detail``."""
        return f"{self.status.value:<11}  {self.subject}: {self.detail}"


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in the order run."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        """Whether any check is MISSING or ERROR."""
        return any(check.status in FAILING for check in self.checks)

    @property
    def exit_code(self) -> int:
        """1 when anything is missing or broken, else 0."""
        return 1 if self.failed else 0

    def find(self, subject: str) -> list[Check]:
        """The checks about ``subject`` (a permission name or e.g. ``"incident channel"``)."""
        return [check for check in self.checks if check.subject == subject]

    def render(self) -> str:
        """The lines, then a one-line verdict."""
        counts = {status: sum(c.status is status for c in self.checks) for status in Status}
        tally = ", ".join(f"{counts[s]} {s.value}" for s in Status if counts[s])
        if self.failed:
            verdict = f"NOT READY ({tally}): fix the MISSING and ERROR lines, then run doctor again."
        else:
            verdict = (
                f"READY ({tally}). The NOT CHECKED permissions are proven by the first action of "
                "each kind; its thread reply names a permission that is still missing."
            )
        return "\n".join([*(check.line() for check in self.checks), verdict])


def token_roles(token: str) -> frozenset[str] | None:
    """The application permissions in an Entra access token's ``roles`` claim.

    ``None`` when the token is not a readable JWT (then nothing can be said); an empty set for a
    JWT without ``roles`` (Entra leaves the claim out when nothing is granted). The signature is
    not checked: the token came straight from the authority to this process.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    roles = payload.get("roles", [])
    return frozenset(str(role) for role in roles) if isinstance(roles, list) else frozenset()


def needed_permissions() -> frozenset[str]:
    """Every application permission the bot's Graph calls can need (from the permissions table)."""
    needed: set[str] = set()
    for requirement in (*OPERATIONS.values(), *USER_PROPERTY_PERMISSIONS.values()):
        needed.update(requirement.permissions)
    return frozenset(needed)


def write_permission_checks(roles: frozenset[str] | None) -> list[Check]:
    """One line per write permission: what needs it, and whether the token's roles list it."""
    uses: dict[OperationPermission, list[str]] = {}
    for (method, path), requirement in OPERATIONS.items():
        if method != "GET" and (method, path) not in _READING_POSTS:
            uses.setdefault(requirement, []).append(f"{method} {path}")
    for name, requirement in USER_PROPERTY_PERMISSIONS.items():
        uses.setdefault(requirement, []).append(f"PATCH {USER_PATH} {name}")
    checks = []
    for requirement, operations in uses.items():
        subject = " and ".join(requirement.permissions)
        needed_by = f"needed by {', '.join(operations)}"
        note = f"; {requirement.note}" if requirement.note else ""
        if roles is None:
            checks.append(Check(Status.NOT_CHECKED, subject, f"{needed_by}; proving it needs a write{note}"))
            continue
        absent = [p for p in requirement.permissions if p not in roles]
        if absent:
            checks.append(
                Check(
                    Status.MISSING,
                    subject,
                    f"the Graph token's roles do not list {' and '.join(absent)}: grant it with admin "
                    f"consent ({needed_by}){note}",
                )
            )
        else:
            checks.append(
                Check(
                    Status.NOT_CHECKED,
                    subject,
                    f"granted (listed in the Graph token's roles), {needed_by}; only a write "
                    f"would prove it works{note}",
                )
            )
    return checks


async def run_doctor(settings: Settings) -> DoctorReport:
    """Run every check against the configuration in ``settings``; never raises for a failed check."""
    checks: list[Check] = []
    policy = _policy_check(settings, checks)
    checks.append(await _bot_credential_check(settings))
    http = build_http_client(
        ca_bundle=settings.graph_ca_bundle or None, timeout=settings.graph_timeout_seconds
    )
    tokens = graph_tokens(settings)
    try:
        token = await _graph_token_check(settings, tokens, checks)
        graph = GraphClient(
            http,
            tokens,
            settings.graph_base_url,
            identity_protection_interval=settings.graph_identity_protection_interval,
        )
        await _GraphProbes(graph, settings, policy).run(checks, have_token=token is not None)
        roles = token_roles(token) if token is not None else None
        checks.extend(write_permission_checks(roles))
        if roles:
            extra = sorted(roles - needed_permissions())
            if extra:
                checks.append(
                    Check(
                        Status.WARNING,
                        "least privilege",
                        f"the Graph token also grants {', '.join(extra)}, which the bot never "
                        "needs: remove them from the app registration",
                    )
                )
    finally:
        await http.aclose()
        await tokens.aclose()
    checks.append(await _channel_check(settings))
    checks.append(await _approval_page_check(settings, policy))
    return DoctorReport(tuple(checks))


async def _approval_page_check(settings: Settings, policy: Policy) -> Check:
    subject = "approval page"
    if not settings.approval_page_base:
        if policy.step_up is not None:
            return Check(
                Status.MISSING,
                subject,
                "the policy's step_up needs the approval page, but APPROVAL_PAGE_URL is empty: nobody "
                "can make a decision it covers",
            )
        return Check(Status.SKIPPED, subject, "off (APPROVAL_PAGE_URL is empty): cards carry no page link")
    sign_in = EntraSignIn(
        tenant_id=settings.graph_tenant_id,
        client_id=settings.graph_client_id,
        redirect_uri=settings.approval_redirect_uri,
        http=build_http_client(
            ca_bundle=settings.graph_ca_bundle or None, timeout=settings.graph_timeout_seconds
        ),
        clock=lambda: datetime.now(UTC),
        client_secret=settings.graph_client_secret.get_secret_value() or None,
        certificate_path=settings.graph_certificate_path or None,
        certificate_thumbprint=settings.graph_certificate_thumbprint or None,
        authority_host=settings.graph_authority_host,
        ca_bundle=settings.graph_ca_bundle or None,
    )
    try:
        accepted, detail = await sign_in.check_redirect_uri()
    finally:
        await sign_in.aclose()
    if accepted is None:
        return Check(Status.ERROR, subject, detail)
    if not accepted:
        return Check(Status.MISSING, subject, detail)
    note = ""
    if policy.step_up is not None:
        note = (
            f"; step_up asks for authentication context {policy.step_up.context}: make sure a Conditional "
            "Access policy requires MFA for it and the app's ID token carries auth_time (NOT CHECKED)"
        )
    return Check(Status.OK, subject, f"{settings.approval_page_base}/approve/…: {detail}{note}")


def _policy_check(settings: Settings, checks: list[Check]) -> Policy:
    try:
        policy = policy_from_settings(settings)
    except ConfigError as exc:
        checks.append(Check(Status.ERROR, "policy", exc.message))
        return Policy()
    source = f"POLICY_FILE {settings.policy_file}" if settings.policy_file else "RESPONDERS"
    if policy.responders.empty:
        checks.append(
            Check(
                Status.MISSING,
                "responders",
                f"{source} names nobody: nobody can act on a case (the bot fails closed)",
            )
        )
    else:
        checks.append(
            Check(
                Status.OK,
                "responders",
                f"{source}: responders {_people(policy.responders)}; approvers {_people(policy.approvers)}",
            )
        )
    return policy


def _people(principals: Principals) -> str:
    users, groups = len(principals.users), len(principals.groups)
    return f"{users} user{'' if users == 1 else 's'}, {groups} group{'' if groups == 1 else 's'}"


async def _bot_credential_check(settings: Settings) -> Check:
    subject = "Bot Framework credential"
    if not settings.microsoft_app_id:
        return Check(
            Status.ERROR,
            subject,
            "MicrosoftAppId is empty (SANDBOX_MODE): inbound authentication is OFF; set the Azure "
            "Bot's app id and secret and SANDBOX_MODE=false before go-live",
        )
    if settings.microsoft_app_type == "UserAssignedMSI":
        return Check(
            Status.NOT_CHECKED,
            subject,
            f"MicrosoftAppType is UserAssignedMSI: the managed identity {settings.microsoft_app_id} "
            "gets its token only on its Azure host",
        )
    tenant = settings.tenant_id if settings.microsoft_app_type == "SingleTenant" else BOT_FRAMEWORK_TENANT
    provider = TokenProvider(
        tenant_id=tenant,
        client_id=settings.microsoft_app_id,
        client_secret=settings.microsoft_app_password.get_secret_value(),
        authority_host=settings.graph_authority_host,
        ca_bundle=settings.graph_ca_bundle or None,
        scope=BOT_FRAMEWORK_SCOPE,
    )
    try:
        await provider.token()
    except GraphError as exc:
        return Check(Status.ERROR, subject, f"MicrosoftAppId/MicrosoftAppPassword: {exc.message}")
    finally:
        await provider.aclose()
    return Check(
        Status.OK,
        subject,
        f"app {settings.microsoft_app_id} ({settings.microsoft_app_type}) got a Bot Framework token "
        f"from tenant {tenant}",
    )


async def _graph_token_check(settings: Settings, tokens: TokenProvider, checks: list[Check]) -> str | None:
    subject = "Graph token"
    try:
        token = await tokens.token()
    except GraphError as exc:
        checks.append(Check(Status.ERROR, subject, exc.message))
        return None
    roles = token_roles(token)
    granted = (
        "an opaque token (its permissions cannot be read)"
        if roles is None
        else f"roles: {', '.join(sorted(roles)) or 'none'}"
    )
    credential = (
        f"{settings.graph_managed_identity}-assigned managed identity"
        if settings.graph_managed_identity
        else "certificate"
        if settings.graph_certificate_path
        else "client secret"
    )
    checks.append(
        Check(
            Status.OK,
            subject,
            f"app {settings.graph_client_id} got an app-only token from tenant "
            f"{settings.graph_tenant_id} with its {credential}; {granted}",
        )
    )
    return token


class _GraphProbes:
    """The harmless reads that prove each read permission, sharing what earlier ones found."""

    def __init__(self, graph: GraphClient, settings: Settings, policy: Policy) -> None:
        self._graph = graph
        self._settings = settings
        self._policy = policy
        self._risky_user_id: str | None = None
        self._alert_user_id: str | None = None
        self._user_id: str | None = None
        self._user_label = ""
        self._upn: str | None = None

    async def run(self, checks: list[Check], *, have_token: bool) -> None:
        probes: list[tuple[tuple[str, str], Callable[[], Awaitable[Check | str]]]] = [
            (_ALERTS, self._alerts),
            (_RISKY_USERS, self._risky_users),
            (_USER, self._user),
            (_ROLES, self._roles),
            (_IDENTITIES, self._identities),
            (_MEMBER_GROUPS, self._member_groups),
            (_RISK_DETECTIONS, self._risk_detections),
        ]
        for operation, probe in probes:
            subject = OPERATIONS[operation].describe()
            if not have_token:
                checks.append(Check(Status.SKIPPED, subject, "no Graph token"))
                continue
            checks.append(await _probe(operation, subject, probe))

    async def _alerts(self) -> str:
        sources = [AlertSource.DEFENDER_FOR_IDENTITY.value, AlertSource.IDENTITY_PROTECTION.value]
        pages = self._graph.list_alerts(
            service_sources=sources, updated_after=None, top=1, select=["id", "evidence"]
        )
        first = await _first(pages)
        self._alert_user_id = _evidence_user(first) if first else None
        seen = "one identity alert read" if first else "no identity alerts yet"
        return f"GET /security/alerts_v2?$top=1 answered ({seen})"

    async def _risky_users(self) -> str:
        first = await _first(self._graph.list_risky_users(top=1))
        if first and isinstance(first.get("id"), str):
            self._risky_user_id = first["id"]
        seen = "one risky user read" if first else "no risky users"
        return f"GET /identityProtection/riskyUsers?$top=1 answered ({seen})"

    async def _user(self) -> Check | str:
        subject = OPERATIONS[_USER].describe()
        candidate = self._responder_id()
        label = f"responder {candidate}"
        if candidate is None and self._risky_user_id is not None:
            candidate, label = self._risky_user_id, f"risky user {self._risky_user_id}"
        if candidate is None and self._alert_user_id is not None:
            candidate, label = self._alert_user_id, f"alerted user {self._alert_user_id}"
        if candidate is None:
            return Check(
                Status.SKIPPED,
                subject,
                "no user to read: the policy names responders only by group, and no risky user or "
                "alert names one; list a responder by object id to check it",
            )
        try:
            user = await self._graph.get_user(candidate, select=list(USER_FIELDS))
        except GraphNotFound:
            return Check(
                Status.ERROR,
                subject,
                f"{label} does not exist in tenant {self._settings.graph_tenant_id}: check the object "
                "ids in RESPONDERS or the policy",
            )
        self._user_id, self._user_label = str(user.get("id") or candidate), label
        upn = user.get("userPrincipalName")
        self._upn = upn if isinstance(upn, str) and upn else None
        if "accountEnabled" not in user:
            return Check(
                Status.MISSING,
                subject,
                f"GET /users/{candidate} answered without accountEnabled: the app seems to hold only "
                "User.ReadBasic.All",
            )
        return f"read {label} ({self._upn or 'no UPN'}, accountEnabled={user['accountEnabled']})"

    async def _roles(self) -> Check | str:
        subject = OPERATIONS[_ROLES].describe()
        if self._user_id is None:
            return Check(Status.SKIPPED, subject, "no user was read (see the user check)")
        roles = await self._graph.list_directory_roles_of(self._user_id)
        if any(not role.get("roleTemplateId") for role in roles):
            return Check(
                Status.MISSING,
                subject,
                "directory roles came back without roleTemplateId: privileged targets cannot be "
                f"recognized without {subject}",
            )
        return f"read the directory roles of {self._user_label} ({_count(len(roles), 'role')})"

    async def _identities(self) -> str:
        upn = self._upn or PROBE_UPN
        found = await self._graph.list_identity_accounts(upn=upn)
        return (
            f"GET /security/identities/identityAccounts for {upn} answered "
            f"({_count(len(found), 'identity', 'identities')})"
        )

    async def _member_groups(self) -> Check | str:
        subject = OPERATIONS[_MEMBER_GROUPS].describe()
        policy = self._policy
        groups = sorted(policy.responders.groups | policy.approvers.groups | policy.privileged_groups)
        if not groups:
            return Check(Status.SKIPPED, subject, "not needed: the policy names no groups")
        if self._user_id is None:
            return Check(Status.SKIPPED, subject, "no user was read (see the user check)")
        member_of = await self._graph.check_member_groups(self._user_id, groups)
        return (
            f"checked {self._user_label} against the policy's {_count(len(groups), 'group')}: "
            f"member of {len(member_of)}"
        )

    async def _risk_detections(self) -> Check | str:
        subject = OPERATIONS[_RISK_DETECTIONS].describe()
        if self._user_id is None:
            return Check(Status.SKIPPED, subject, "no user was read (see the user check)")
        found = await self._graph.list_risk_detections(self._user_id, top=1)
        return (
            f"GET /identityProtection/riskDetections?$top=1 for {self._user_label} answered "
            f"({_count(len(found), 'detection')})"
        )

    def _responder_id(self) -> str | None:
        if self._settings.responders:
            return self._settings.responders[0]
        for principals in (self._policy.responders, self._policy.approvers):
            if principals.users:
                return sorted(principals.users)[0]
        return None


async def _probe(
    operation: tuple[str, str], subject: str, probe: Callable[[], Awaitable[Check | str]]
) -> Check:
    method, path = operation
    try:
        outcome = await probe()
    except GraphForbidden as exc:
        code = f" {exc.code}" if exc.code else ""
        return Check(
            Status.MISSING,
            subject,
            f"{method} {path} was refused ({exc.status}{code}): grant {subject} to the app "
            "registration with admin consent",
        )
    except RemediationError as exc:
        return Check(Status.ERROR, subject, f"{method} {path}: {exc.message}")
    return outcome if isinstance(outcome, Check) else Check(Status.OK, subject, outcome)


def _count(number: int, singular: str, plural: str = "") -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _evidence_user(alert: JSONObject) -> str | None:
    """The Entra object id of the first user in an alert's evidence, if any."""
    for evidence in alert.get("evidence") or []:
        account = evidence.get("userAccount") if isinstance(evidence, dict) else None
        object_id = account.get("azureAdUserId") if isinstance(account, dict) else None
        if isinstance(object_id, str) and object_id:
            return object_id
    return None


async def _first(items: AsyncIterator[JSONObject]) -> JSONObject | None:
    """The first item of the client's paged listing, without asking for a second page."""
    try:
        async for item in items:
            return item
        return None
    finally:
        # The listings are async generators: closing one stops it before the next page.
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


async def _channel_check(settings: Settings) -> Check:
    subject = "incident channel"
    url = settings.store_url.get_secret_value()
    wanted = settings.teams_channel_id
    # Opening a missing SQLite file would create an empty database: say what is missing instead.
    if url.startswith("sqlite:///") and not settings.sqlite_path.is_file():
        return Check(
            Status.MISSING,
            subject,
            f"no database at {settings.sqlite_path} (STORE_URL) yet: start the bot (remediation-bot "
            f"serve), then add the app to the team of TEAMS_CHANNEL_ID {wanted}; the bot learns the "
            "channel at install",
        )
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await open_store(url, password=database_password(settings, stack))
        except RemediationError as exc:
            return Check(Status.ERROR, subject, f"cannot open the store {redact_url(url)}: {exc.message}")
        try:
            channel = await store.get_channel()
        except RemediationError as exc:
            return Check(Status.ERROR, subject, f"cannot read the store {redact_url(url)}: {exc.message}")
        finally:
            await store.close()
    if channel is None:
        return Check(
            Status.MISSING,
            subject,
            f"the bot has not been installed in the team of TEAMS_CHANNEL_ID {wanted} yet: add the app "
            "to that team (Teams › the team › Manage team › Apps); cards wait until then",
        )
    if channel.channel_id != wanted:
        return Check(
            Status.MISSING,
            subject,
            f"the stored channel is {channel.channel_id}, not TEAMS_CHANNEL_ID {wanted}: add the app to "
            "the team of the configured channel (or correct TEAMS_CHANNEL_ID)",
        )
    if channel.tenant_id and channel.tenant_id.lower() != settings.graph_tenant_id.lower():
        return Check(
            Status.ERROR,
            subject,
            f"the channel is in tenant {channel.tenant_id} but GRAPH_TENANT_ID is "
            f"{settings.graph_tenant_id}: the bot would act on another tenant's identities",
        )
    team = f", team {channel.team_id}" if channel.team_id else ""
    return Check(Status.OK, subject, f"{wanted} is registered (service URL {channel.service_url}{team})")
