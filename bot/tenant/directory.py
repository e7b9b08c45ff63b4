"""The I/O side of the policy: what Entra ID says about the person clicking and about the target.

The policy names people and groups; group membership and directory roles live in Entra ID.
:class:`Directory` asks Microsoft Graph and hands the pure approval functions plain values
(:class:`~bot.domain.policy.ActorRoles`, :class:`~bot.domain.policy.TargetFacts`).

When Graph cannot answer, both questions err on the safe side. Nobody gets a role through a group
the bot cannot check (fail closed: only the people the policy names directly keep theirs). A
target whose privilege cannot be checked counts as privileged, so its action needs two sign-offs
(fail safe). Failed answers are never cached, so the next click asks again; each kind of failure
is logged once until Graph answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from bot.domain.models import Actor, IdentityRef
from bot.domain.policy import ActorRoles, Policy, TargetFacts
from bot.errors import GraphError, GraphNotFound

log = logging.getLogger(__name__)

UNCHECKED_REASON = "privilege could not be checked"

_T = TypeVar("_T")


class DirectoryGraph(Protocol):
    """The Graph operations the directory needs (:class:`bot.graph.GraphClient` has them)."""

    async def check_member_groups(self, user_id: str, group_ids: Sequence[str]) -> set[str]:
        """The ids among ``group_ids`` the user is a transitive member of."""
        ...

    async def list_directory_roles_of(self, user_id: str) -> list[dict[str, Any]]:
        """The directory roles the user holds (id, displayName, roleTemplateId)."""
        ...

    async def get_user(self, user_id: str, select: Sequence[str]) -> dict[str, Any]:
        """One user with the ``select``-ed properties."""
        ...


@dataclass(frozen=True)
class _Entry(Generic[_T]):
    value: _T
    expires: datetime


class _Unchecked(Exception):
    """Graph answered, but not enough to decide (e.g. a role without its template id)."""


class Directory:
    """Resolves the policy's groups and privileged roles against Entra ID, with a short cache.

    Answers are cached per user for ``ttl``: a card render, a click and the approval that
    follows ask about the same people within seconds. A change in Entra ID (someone leaves the
    SOC group, gains a role) therefore shows after at most ``ttl``.
    """

    def __init__(
        self,
        graph: DirectoryGraph,
        policy: Policy,
        *,
        clock: Callable[[], datetime],
        ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        """Ask ``graph`` about the people and groups ``policy`` names; ``clock`` says when cache ends."""
        self._graph = graph
        self._policy = policy
        self._clock = clock
        self._ttl = ttl
        self._roles: dict[str, _Entry[ActorRoles]] = {}
        self._targets: dict[str, _Entry[TargetFacts]] = {}
        self._names: dict[str, _Entry[str]] = {}
        # One lookup per person at a time: a double click should not ask Graph twice.
        self._locks: dict[str, asyncio.Lock] = {}
        self._failing: set[str] = set()

    @property
    def policy(self) -> Policy:
        """The policy this directory resolves."""
        return self._policy

    async def roles_of(self, object_id: str) -> ActorRoles:
        """Whether the person may request (responder) and sign off (approver).

        Listed directly in the policy, or a member (through nested groups too) of a listed group.
        If Graph fails, group-derived roles are withheld and only direct listings count.
        """
        key = object_id.lower()
        async with self._lock(f"roles:{key}"):
            cached = self._fresh(self._roles, key)
            if cached is not None:
                return cached
            responders, approvers = self._policy.responders, self._policy.approvers
            responder = responders.names_user(object_id)
            approver = approvers.names_user(object_id)
            # Ask Graph only about the groups that could still grant something.
            wanted: set[str] = set()
            if not responder:
                wanted |= _lower(responders.groups)
            if not approver:
                wanted |= _lower(approvers.groups)
            if wanted:
                try:
                    member_of = _lower(await self._graph.check_member_groups(object_id, sorted(wanted)))
                except GraphNotFound:
                    member_of = set()  # not a user of this tenant: a member of nothing here
                except GraphError as exc:
                    self._failed(
                        "membership",
                        f"group membership could not be checked ({exc.message}); until it can, only "
                        "the people the policy names directly can act or approve",
                    )
                    return ActorRoles(object_id=object_id, responder=responder, approver=approver)
                self._recovered("membership", "group membership can be checked again")
                responder = responder or bool(member_of & _lower(responders.groups))
                approver = approver or bool(member_of & _lower(approvers.groups))
            roles = ActorRoles(object_id=object_id, responder=responder, approver=approver)
            self._roles[key] = _Entry(roles, self._clock() + self._ttl)
            return roles

    async def target_facts(self, identity: IdentityRef) -> TargetFacts:
        """Whether the target is protected, and whether (and why) it is privileged.

        Privileged: it holds a directory role whose template the policy lists, or is a member of
        a privileged group. If that cannot be checked, the target counts as privileged with the
        reason :data:`UNCHECKED_REASON`.
        """
        if not identity.object_id and not identity.upn:
            return self._unchecked(identity)
        key = identity.key
        async with self._lock(f"target:{key}"):
            cached = self._fresh(self._targets, key)
            if cached is not None:
                return cached
            complete = identity
            try:
                complete = await self._complete(identity)
                reason = await self._privilege(complete)
            except (GraphError, _Unchecked) as exc:
                detail = exc.message if isinstance(exc, GraphError) else str(exc)
                self._failed(
                    "privilege",
                    f"target privilege could not be checked ({detail}); until it can, every "
                    "action needs two sign-offs",
                )
                return self._unchecked(complete)
            self._recovered("privilege", "target privilege can be checked again")
            facts = TargetFacts(
                privileged=bool(reason),
                privileged_reason=reason,
                protected=self._policy.is_protected(complete),
            )
            self._targets[key] = _Entry(facts, self._clock() + self._ttl)
            return facts

    async def named_approvers(self) -> list[Actor]:
        """The approvers the policy names directly, with their Entra display names where known.

        Members of approver groups are not listed: enumerating a group's members needs a
        Graph operation (and permission) the bot does not otherwise use.
        """
        actors = []
        for object_id in sorted(self._policy.approvers.users, key=str.lower):
            actors.append(Actor(object_id=object_id, name=await self._display_name(object_id)))
        return actors

    # -- Graph lookups -------------------------------------------------------------------------

    async def _complete(self, identity: IdentityRef) -> IdentityRef:
        # A protected account may be listed by UPN while the alert names it by object id (or the
        # other way round); fetch the missing half so the protection cannot be sidestepped.
        if not self._policy.protected_users or (identity.object_id and identity.upn):
            return identity
        user = await self._graph.get_user(identity.key, ["id", "userPrincipalName"])
        return identity.merged(
            IdentityRef(object_id=_text(user.get("id")), upn=_text(user.get("userPrincipalName")))
        )

    async def _privilege(self, identity: IdentityRef) -> str:
        """Why the identity is privileged, or "" when it is not."""
        user_id = identity.object_id or identity.upn or ""
        templates = _lower(self._policy.privileged_role_templates)
        if templates:
            roles = await self._graph.list_directory_roles_of(user_id)
            held = sorted(
                {
                    str(role.get("displayName") or role.get("roleTemplateId"))
                    for role in roles
                    if str(role.get("roleTemplateId") or "").lower() in templates
                }
            )
            if held:
                return _holds(held)
            if any(not role.get("roleTemplateId") for role in roles):
                # Graph hides role details from an app without RoleManagement.Read.Directory.
                raise _Unchecked(
                    "Graph returned directory roles without roleTemplateId: grant the app "
                    "RoleManagement.Read.Directory"
                )
        groups = _lower(self._policy.privileged_groups)
        if groups:
            member_of = sorted(_lower(await self._graph.check_member_groups(user_id, sorted(groups))))
            if member_of:
                label = "group" if len(member_of) == 1 else "groups"
                return f"is a member of the privileged {label} {', '.join(member_of)}"
        return ""

    async def _display_name(self, object_id: str) -> str:
        key = object_id.lower()
        cached = self._fresh(self._names, key)
        if cached is not None:
            return cached
        try:
            user = await self._graph.get_user(object_id, ["id", "displayName"])
        except GraphError as exc:
            self._failed("names", f"approver names could not be read ({exc.message})")
            return ""
        self._recovered("names", "approver names can be read again")
        name = _text(user.get("displayName")) or ""
        self._names[key] = _Entry(name, self._clock() + self._ttl)
        return name

    # -- helpers -------------------------------------------------------------------------------

    def _unchecked(self, identity: IdentityRef) -> TargetFacts:
        # With protected accounts configured, an identity known by only one of its names could be
        # a protected account listed by the other: fail closed and treat it as protected.
        incomplete = bool(self._policy.protected_users) and not (identity.object_id and identity.upn)
        return TargetFacts(
            privileged=True,
            privileged_reason=UNCHECKED_REASON,
            protected=incomplete or self._policy.is_protected(identity),
        )

    def _fresh(self, cache: dict[str, _Entry[_T]], key: str) -> _T | None:
        entry = cache.get(key)
        if entry is None or self._clock() >= entry.expires:
            return None
        return entry.value

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _failed(self, kind: str, message: str) -> None:
        # Every click during an outage fails the same way; one line per outage is enough.
        if kind not in self._failing:
            self._failing.add(kind)
            log.warning("directory: %s", message)

    def _recovered(self, kind: str, message: str) -> None:
        if kind in self._failing:
            self._failing.discard(kind)
            log.info("directory: %s", message)


def _lower(values: Iterable[str]) -> set[str]:
    return {v.lower() for v in values}


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _holds(role_names: Sequence[str]) -> str:
    """``holds the X role`` / ``holds the X and Y roles`` / ``holds the X, Y and Z roles``."""
    if len(role_names) == 1:
        return f"holds the {role_names[0]} role"
    return f"holds the {', '.join(role_names[:-1])} and {role_names[-1]} roles"
