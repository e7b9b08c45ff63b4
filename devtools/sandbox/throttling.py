"""Microsoft Graph's documented throttling for the services the bot calls (off unless asked for).

``SandboxTenant(..., throttling=True)`` answers ``429 Too Many Requests`` where Microsoft says
Graph would, so a benchmark sees what a busy tenant does to the bot. The numbers come from
Microsoft's own pages, not from the bot's pacers:

*Microsoft Graph service-specific throttling limits* (https://learn.microsoft.com/graph/throttling-limits;
its source is ``concepts/throttling-limits.md`` in ``microsoftgraph/microsoft-graph-docs-contrib``):

- **Identity protection and conditional access service limits**: "Any | 1 request per second",
  *limit per tenant for all apps*, for riskDetection, riskyUser, riskyUserHistoryItem, the named
  locations and conditionalAccessPolicy; "The resources listed earlier do not return a
  ``Retry-After`` header on ``429 Too Many Requests`` responses" — so none is sent here either.
- **Security detections and incidents service limits**: "The following limits apply to any
  request on ``/security``": "Any operation on ``alert``, ``securityActions``, ``secureScore`` |
  150 requests per minute", *limit per app per tenant*. The table names ``alert``; alerts_v2 is
  that resource's current version (``microsoft.graph.security.alert``), so its list, get, update
  and comments share the 150 per minute. The Defender for Identity resources
  (``/security/identities/...``) are not in the table: no documented limit, none applied.
- **Identity and access service limits** (users, groups, directory roles and objects): "a token
  bucket algorithm" adding up request costs. Per application+tenant pair, resource units
  "S: 3,500 requests per 10 seconds, M: 5,000, L: 8,000" (S under 50 users, M 50 to 500, L
  above 500) and a write quota of "3,000 requests per 2 minutes and 30 seconds". Costs from the
  page's table: ``GET users`` 2, ``POST me/checkMemberGroups`` 4, ``GET me/transitiveMemberOf``
  2 (what costs a ``me/`` path also costs ``users/{id}/``), any other GET 1, any other POST,
  PATCH, PUT or DELETE 1 and one write; ``$select`` takes 1 off, ``$expand`` adds 1, ``$top``
  under 20 takes 1 off, never below 1. The tenant-wide write quota (18,000 per 5 minutes) and
  the per-application ones cannot bind one app in one tenant before the pair's quota does.
- The global limit (130,000 requests per 10 seconds per app across all tenants) cannot bind here.

Throttled requests do not count toward any window (only requests Graph carried out do). Graph
gives ``Retry-After`` in seconds; the sandbox gives whole seconds, rounded up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

IDENTITY_PROTECTION = "identity protection"
SECURITY_ALERTS = "security alerts"
IDENTITY_AND_ACCESS = "identity and access"

# Sliding windows: (requests, seconds).
IDENTITY_PROTECTION_LIMIT = (1, 1.0)
SECURITY_ALERTS_LIMIT = (150, 60.0)
# Token buckets: (capacity, seconds to refill it completely).
IDENTITY_AND_ACCESS_UNITS = {"S": (3500, 10.0), "M": (5000, 10.0), "L": (8000, 10.0)}
IDENTITY_AND_ACCESS_WRITES = (3000, 150.0)

_IDENTITY_ROOTS = frozenset(
    {
        "users",
        "me",
        "groups",
        "directoryRoles",
        "directoryObjects",
        "servicePrincipals",
        "applications",
        "organization",
        "domains",
        "contracts",
        "oauth2PermissionGrants",
        "subscribedSkus",
        "devices",
    }
)
# (method, path pattern) -> base resource-unit cost; "{id}" stands for one segment. Every
# operation listed here has a write cost of 0 (the page's table), the rest 1 for a write method.
_COSTS: Mapping[tuple[str, str], int] = {
    ("GET", "applications"): 2,
    ("GET", "applications/{id}/extensionProperties"): 2,
    ("GET", "contracts"): 3,
    ("POST", "directoryObjects/getByIds"): 3,
    ("GET", "domains/{id}/domainNameReferences"): 4,
    ("POST", "getObjectsById"): 3,
    ("GET", "groups/{id}/members"): 3,
    ("GET", "groups/{id}/transitiveMembers"): 5,
    ("POST", "isMemberOf"): 4,
    ("POST", "users/{id}/checkMemberGroups"): 4,
    ("POST", "users/{id}/checkMemberObjects"): 4,
    ("POST", "users/{id}/getMemberGroups"): 2,
    ("POST", "users/{id}/getMemberObjects"): 2,
    ("GET", "users/{id}/licenseDetails"): 2,
    ("GET", "users/{id}/memberOf"): 2,
    ("GET", "users/{id}/ownedObjects"): 2,
    ("GET", "users/{id}/transitiveMemberOf"): 2,
    ("GET", "oauth2PermissionGrants"): 2,
    ("GET", "oauth2PermissionGrants/{id}"): 2,
    ("GET", "servicePrincipals/{id}/appRoleAssignments"): 2,
    ("GET", "subscribedSkus"): 3,
    ("GET", "users"): 2,
}
_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass(frozen=True)
class Throttled:
    """Why a request was refused: the service, its limit, and the ``Retry-After`` (if Graph sends one)."""

    service: str
    limit: str
    retry_after: int | None


def service_of(path: str) -> str | None:
    """The throttled service a Graph path (after ``/v1.0``) belongs to, if any."""
    segments = path.strip("/").split("/")
    if segments[0] == "identityProtection" or segments[:2] == ["identity", "conditionalAccess"]:
        return IDENTITY_PROTECTION
    if segments[0] == "security" and len(segments) > 1 and segments[1] in ("alerts_v2", "alerts"):
        return SECURITY_ALERTS
    if segments[0] in _IDENTITY_ROOTS:
        return IDENTITY_AND_ACCESS
    return None


def identity_cost(method: str, path: str, query: Mapping[str, str]) -> tuple[int, int]:
    """(resource units, writes) one identity-and-access request costs, from the page's table."""
    segments = path.strip("/").split("/")
    if segments[0] == "me":
        segments = ["users", "{id}", *segments[1:]]
    elif (
        segments[0] in ("users", "groups", "applications", "servicePrincipals", "domains")
        and len(segments) > 1
    ):
        segments = [segments[0], "{id}", *segments[2:]]
    method = method.upper()
    # A cast after the navigation (transitiveMemberOf/microsoft.graph.directoryRole) costs as the navigation.
    if len(segments) > 1 and segments[-1].startswith("microsoft.graph."):
        segments = segments[:-1]
    listed = _COSTS.get((method, "/".join(segments)))
    units = listed if listed is not None else 1
    writes = 1 if method in _WRITES and listed is None else 0
    if "$select" in query:
        units -= 1
    if "$expand" in query:
        units += 1
    top = query.get("$top", "")
    if top.isdigit() and int(top) < 20:
        units -= 1
    return max(units, 1), writes


def tenant_size(users: int) -> str:
    """The page's tenant sizes: S under 50 users, M 50 to 500, L above 500."""
    if users < 50:
        return "S"
    return "M" if users <= 500 else "L"


@dataclass
class _Window:
    """At most ``limit`` requests in any ``seconds``: the times of those carried out."""

    limit: int
    seconds: float
    accepted: deque[float] = field(default_factory=deque)

    def wait(self, now: float) -> float:
        while self.accepted and self.accepted[0] + self.seconds <= now:
            self.accepted.popleft()
        if len(self.accepted) < self.limit:
            return 0.0
        return self.accepted[len(self.accepted) - self.limit] + self.seconds - now


@dataclass
class _Bucket:
    """A token bucket of ``capacity`` refilled completely in ``seconds``; starts full."""

    capacity: float
    seconds: float
    tokens: float = -1.0
    at: float = 0.0

    def wait(self, cost: float, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.at = self.capacity, now
        rate = self.capacity / self.seconds
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * rate)
        self.at = now
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / rate


class GraphThrottle:
    """Decides, per Graph request, whether Graph's documented limits let it through."""

    def __init__(self, *, users: Callable[[], int], clock: Callable[[], float] = time.monotonic) -> None:
        """``users`` counts the tenant's users (its size picks the identity quota)."""
        self._users = users
        self._clock = clock
        self._identity_protection = _Window(*IDENTITY_PROTECTION_LIMIT)
        self._security = _Window(*SECURITY_ALERTS_LIMIT)
        self._units: dict[str, _Bucket] = {}
        self._writes = _Bucket(*IDENTITY_AND_ACCESS_WRITES)
        self.refused: list[Throttled] = []

    def admit(self, method: str, path: str, query: Mapping[str, str]) -> Throttled | None:
        """None when the request may run (it is counted); otherwise why it is refused."""
        service = service_of(path)
        now = self._clock()
        refusal: Throttled | None = None
        if service == IDENTITY_PROTECTION:
            refusal = self._window(self._identity_protection, service, "1 request per second per tenant", now)
        elif service == SECURITY_ALERTS:
            refusal = self._window(self._security, service, "150 requests per minute per app per tenant", now)
        elif service == IDENTITY_AND_ACCESS:
            refusal = self._identity(method, path, query, now)
        if refusal is not None:
            self.refused.append(refusal)
        return refusal

    @staticmethod
    def _window(window: _Window, service: str, limit: str, now: float) -> Throttled | None:
        wait = window.wait(now)
        if wait > 0:
            retry = None if service == IDENTITY_PROTECTION else max(1, math.ceil(wait))
            return Throttled(service, limit, retry)
        window.accepted.append(now)
        return None

    def _identity(self, method: str, path: str, query: Mapping[str, str], now: float) -> Throttled | None:
        size = tenant_size(self._users())
        bucket = self._units.get(size)
        if bucket is None:
            bucket = self._units[size] = _Bucket(*IDENTITY_AND_ACCESS_UNITS[size])
        units, writes = identity_cost(method, path, query)
        wait_units = bucket.wait(units, now)
        wait_writes = self._writes.wait(writes, now) if writes else 0.0
        if wait_units > 0 or wait_writes > 0:
            limit = (
                f"{int(bucket.capacity)} resource units per {bucket.seconds:g} s (tenant size {size})"
                if wait_units >= wait_writes
                else "3,000 writes per 2 minutes 30 seconds"
            )
            return Throttled(IDENTITY_AND_ACCESS, limit, max(1, math.ceil(max(wait_units, wait_writes))))
        bucket.tokens -= units
        self._writes.tokens -= writes
        return None
