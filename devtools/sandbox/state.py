"""The sandbox tenant's state: directory objects, alerts, tokens, page cursors, faults, records."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devtools.sandbox.wire import iso

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the sandbox answered (identity and Graph alike)."""

    method: str
    path: str
    query: Mapping[str, str]
    json: Any
    form: Mapping[str, str] | None
    status: int
    request_id: str
    client_request_id: str
    # When the request arrived and when its answer was ready (``time.monotonic()``): benchmarks
    # time the bot against the time the sandbox itself took.
    arrived: float = 0.0
    answered: float = 0.0
    # For a request inside a JSON batch: the request-id of the POST /$batch that carried it.
    batch_request_id: str = ""


@dataclass
class Fault:
    """An answer the sandbox gives instead of the real one, ``times`` times (see inject_fault).

    ``status`` None gives the real answer, only ``delay`` seconds late: the operation happens,
    its answer may not reach a client that timed out.
    """

    method: str
    path_pattern: re.Pattern[str]
    status: int | None
    headers: Mapping[str, str]
    body: Mapping[str, Any] | str | None
    times: int
    delay: float

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to ``method path`` (``*`` matches any method)."""
        return (
            self.times > 0
            and self.method in ("*", method.upper())
            and self.path_pattern.search(path) is not None
        )


@dataclass
class ProviderAccount:
    """One account of an identity in one identity provider, as Defender for Identity acts on it.

    The Graph schema (``security.account``) shows only identifier, provider and actions; the
    state below is what the provider holds. ``enabled`` is that of the AD or Okta account; an
    ``entraID`` account is the Entra user itself, whose ``accountEnabled`` says instead.
    """

    identity_provider: str
    identifier: str
    enabled: bool = True
    # forcePasswordReset on AD: "user must change password at next logon".
    must_change_password: bool = False
    # revokeAllSessions on Okta (Entra's own is the user's signInSessionsValidFromDateTime).
    sessions_revoked_at: str | None = None


@dataclass
class IdentityRecord:
    """An identity Defender for Identity observes (``security.user``) and its accounts."""

    id: str
    user_id: str
    cloud_security_identifier: str
    accounts: list[ProviderAccount]

    def account(self, identity_provider: str) -> ProviderAccount | None:
        """The identity's account in ``identity_provider``, if it has one."""
        for account in self.accounts:
            if account.identity_provider == identity_provider:
                return account
        return None


@dataclass(frozen=True)
class Cursor:
    """The rest of a collection a ``$skiptoken`` stands for."""

    collection: str
    ids: tuple[str, ...]
    top: int
    select: tuple[str, ...] | None


@dataclass
class TenantState:
    """Everything the sandbox remembers; handlers read and change it on the event loop."""

    tenant_id: str
    client_id: str
    client_secret: str
    clock: Callable[[], datetime]
    users: dict[str, JSONObject] = field(default_factory=dict)
    alerts: dict[str, JSONObject] = field(default_factory=dict)
    risky_users: dict[str, JSONObject] = field(default_factory=dict)
    risk_detections: dict[str, JSONObject] = field(default_factory=dict)
    identities: dict[str, IdentityRecord] = field(default_factory=dict)
    # The Action Center's history of invokeAction calls: what ran, on which account, when.
    identity_actions: list[JSONObject] = field(default_factory=list)
    groups: dict[str, JSONObject] = field(default_factory=dict)
    directory_roles: dict[str, JSONObject] = field(default_factory=dict)
    # Group and directory role id -> object ids (users, groups) that are direct members of it.
    members: dict[str, set[str]] = field(default_factory=dict)
    tokens: dict[str, datetime] = field(default_factory=dict)
    # The directory holds credentials, as Entra ID does; only tests read them, to prove the
    # bot never lets a password it set escape anywhere else.
    passwords: dict[str, str] = field(default_factory=dict)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    certificates: dict[str, bytes] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    # The requests carried inside JSON batches (each batch itself is one of ``requests``).
    batched_requests: list[RecordedRequest] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # The app's name as Defender shows it on what the app writes (alert comments).
    app_display_name: str = "remediation-bot"
    # Seconds of tenant clock between automatic directory syncs; None: only run_directory_sync().
    sync_interval: float | None = None
    last_directory_sync: datetime | None = None

    def find_user(self, key: str) -> JSONObject | None:
        """A user by object id or UPN (case-insensitive, as Graph does)."""
        if key in self.users:
            return self.users[key]
        lowered = key.lower()
        for user in self.users.values():
            if str(user["id"]).lower() == lowered:
                return user
            if str(user["userPrincipalName"]).lower() == lowered:
                return user
        return None

    def find_identity(self, key: str) -> IdentityRecord | None:
        """An identity by its id, or by the object id or UPN of its Entra user."""
        lowered = key.lower()
        for record in self.identities.values():
            if record.id.lower() == lowered:
                return record
        user = self.find_user(key)
        if user is None:
            return None
        for record in self.identities.values():
            if record.user_id == user["id"]:
                return record
        return None

    def run_directory_sync(self) -> None:
        """One Entra Connect sync cycle: AD masters ``accountEnabled`` of every synced user.

        A cloud-side disable of a synced user is undone here, unless its AD account was
        disabled (through Defender for Identity), which this cycle carries to Entra ID.
        """
        now = self.clock()
        for record in self.identities.values():
            on_premises = record.account("activeDirectory")
            user = self.users.get(record.user_id)
            if on_premises is None or user is None or not user.get("onPremisesSyncEnabled"):
                continue
            user["accountEnabled"] = on_premises.enabled
            user["onPremisesLastSyncDateTime"] = iso(now)
        self.last_directory_sync = now

    def sync_if_due(self) -> None:
        """Run the directory sync when ``sync_interval`` of tenant clock passed since the last."""
        if self.sync_interval is None:
            return
        now = self.clock()
        if self.last_directory_sync is None:
            self.last_directory_sync = now
        elif now - self.last_directory_sync >= timedelta(seconds=self.sync_interval):
            self.run_directory_sync()

    def transitive_groups(self, object_id: str) -> set[str]:
        """Ids of the groups ``object_id`` belongs to, directly or through nested groups."""
        found: set[str] = set()
        frontier = {object_id.lower()}
        while frontier:
            # One level up per round; ``found`` stops a membership cycle from looping forever.
            above = {
                group_id
                for group_id in self.groups
                if group_id not in found and self.members.get(group_id, set()) & frontier
            }
            found |= above
            frontier = above
        return found

    def transitive_roles(self, object_id: str) -> list[JSONObject]:
        """The directory roles ``object_id`` holds, directly or through a (role-assignable) group."""
        holders = {object_id.lower()} | self.transitive_groups(object_id)
        return [
            role
            for role_id, role in self.directory_roles.items()
            if self.members.get(role_id, set()) & holders
        ]

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault for ``method path``, counting one use of it."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                return fault
        return None
