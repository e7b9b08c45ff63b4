"""The sandbox tenant's state: directory objects, alerts, tokens, page cursors, faults, records."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


@dataclass
class Fault:
    """An answer the sandbox gives instead of the real one, ``times`` times (see inject_fault)."""

    method: str
    path_pattern: re.Pattern[str]
    status: int
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
    groups: dict[str, JSONObject] = field(default_factory=dict)
    directory_roles: dict[str, JSONObject] = field(default_factory=dict)
    # Group and directory role id -> object ids (users, groups) that are direct members of it.
    members: dict[str, set[str]] = field(default_factory=dict)
    tokens: dict[str, datetime] = field(default_factory=dict)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    certificates: dict[str, bytes] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

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
