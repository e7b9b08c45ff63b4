"""Who an alert is about, as one Entra object id: what makes one case per person.

Alerts name people in different ways: a polled Defender for Identity alert usually carries the
Entra object id, a pushed minimal alert or a Defender alert without one only a user principal
name, in whatever letter case the sender used. Every intake path (poll, push, riskyUsers,
``contain``) passes its alerts through :class:`IdentityResolver` before they join or open a case,
so they are all keyed on the object id Entra ID gives for the name (``GET /users/{upn}``).

Answers are cached per process under the lower-cased UPN: found users for a few minutes,
"no such user" and "Graph did not answer" only briefly, so a new account or a recovered Graph
is picked up soon. A name that cannot be resolved yet keeps the UPN only; the case it opens
offers no action until a later attempt resolves it (see
:meth:`bot.services.RemediationService.settle_unresolved`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.domain.models import Alert, IdentityRef
from bot.errors import GraphBadRequest, GraphError, GraphNotFound
from bot.graph import GraphClient

log = logging.getLogger(__name__)

FOUND_TTL = timedelta(minutes=5)
NOT_FOUND_TTL = timedelta(minutes=1)
UNAVAILABLE_TTL = timedelta(seconds=15)
MAX_CACHED = 10_000
MAX_CONCURRENT_LOOKUPS = 8
USER_FIELDS = ("id", "userPrincipalName", "displayName")


class Outcome(StrEnum):
    """How an identity came to be (or not to be) known by its object id."""

    GIVEN = "given"  # the alert carried the object id
    FOUND = "found"  # Entra ID returned the user for the UPN
    NOT_FOUND = "not found"  # Entra ID has no user by that name (or the name is not one)
    UNAVAILABLE = "unavailable"  # Graph could not be asked (outage, throttling, permission)


@dataclass(frozen=True)
class Resolution:
    """An identity as resolved: ``identity.object_id`` is set exactly when it was resolved."""

    identity: IdentityRef
    outcome: Outcome
    detail: str = ""

    @property
    def resolved(self) -> bool:
        """Whether the identity is known by its Entra object id."""
        return self.identity.object_id is not None


@dataclass(frozen=True)
class _Answer:
    user: IdentityRef | None
    outcome: Outcome
    detail: str
    until: datetime


class IdentityResolver:
    """Resolves user principal names to Entra object ids through Graph, with a cache.

    ``clock`` is the service's clock (the cache's time-to-live is measured on it). Concurrent
    look-ups of one name share one Graph call.
    """

    def __init__(
        self,
        graph: GraphClient,
        clock: Callable[[], datetime],
        *,
        found_ttl: timedelta = FOUND_TTL,
        not_found_ttl: timedelta = NOT_FOUND_TTL,
        unavailable_ttl: timedelta = UNAVAILABLE_TTL,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._graph = graph
        self._clock = clock
        self._ttl = {
            Outcome.FOUND: found_ttl,
            Outcome.NOT_FOUND: not_found_ttl,
            Outcome.UNAVAILABLE: unavailable_ttl,
        }
        self._max_cached = max_cached
        self._cache: OrderedDict[str, _Answer] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._lookups = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)

    async def resolve(self, identity: IdentityRef) -> Resolution:
        """``identity`` with its Entra object id, when it has one or Entra ID gives one for its UPN.

        An identity that already carries an object id is taken as it is. Otherwise the UPN is
        looked up (case-insensitively); Entra ID's object id, UPN and display name are merged in.
        """
        if identity.object_id:
            return Resolution(identity, Outcome.GIVEN)
        name = (identity.upn or "").strip()
        if not name:
            return Resolution(identity, Outcome.NOT_FOUND, "the alert names no user principal name")
        answer = await self._answer(name)
        if answer.user is None:
            return Resolution(identity, answer.outcome, answer.detail)
        known = IdentityRef(
            object_id=answer.user.object_id,
            upn=answer.user.upn or identity.upn,
            display_name=identity.display_name or answer.user.display_name,
            on_prem_sid=identity.on_prem_sid,
        )
        return Resolution(known, answer.outcome)

    async def resolve_alerts(self, alerts: Sequence[Alert]) -> list[Alert]:
        """``alerts`` with every target resolved as far as possible (each name looked up once)."""
        names = {
            a.target.upn.strip().lower(): a.target for a in alerts if not a.target.object_id and a.target.upn
        }
        found = await asyncio.gather(*(self.resolve(target) for target in names.values()))
        by_name = dict(zip(names, found, strict=True))
        resolved: list[Alert] = []
        for alert in alerts:
            target = alert.target
            if target.object_id or not target.upn:
                resolved.append(alert)
                continue
            answer = by_name[target.upn.strip().lower()]
            if not answer.resolved:
                resolved.append(alert)
                continue
            # Each alert keeps what it said itself (its display name, its SID); the id is Entra's.
            known = IdentityRef(
                object_id=answer.identity.object_id,
                upn=answer.identity.upn,
                display_name=target.display_name or answer.identity.display_name,
                on_prem_sid=target.on_prem_sid,
            )
            resolved.append(alert.model_copy(update={"target": known}))
        return resolved

    async def _answer(self, name: str) -> _Answer:
        key = name.lower()
        cached = self._fresh(key)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                cached = self._fresh(key)
                if cached is not None:
                    return cached
                async with self._lookups:
                    answer = await self._look_up(name)
                self._remember(key, answer)
                return answer
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    async def _look_up(self, name: str) -> _Answer:
        outcome: Outcome
        try:
            user = await self._graph.get_user(name, select=list(USER_FIELDS))
        except (GraphNotFound, GraphBadRequest) as exc:
            # 400: Graph does not take it for a name at all; no user can ever be found by it.
            outcome, detail, found = Outcome.NOT_FOUND, f"Entra ID has no user {name}", None
            log.info("identity %s not resolved: %s", name, exc.message)
        except GraphError as exc:
            outcome, detail, found = Outcome.UNAVAILABLE, exc.message, None
            log.warning("identity %s could not be resolved now: %s", name, exc.message)
        else:
            object_id = user.get("id")
            if not isinstance(object_id, str) or not object_id:
                outcome, detail, found = Outcome.UNAVAILABLE, "Graph returned the user without its id", None
            else:
                upn = user.get("userPrincipalName")
                display = user.get("displayName")
                found = IdentityRef(
                    object_id=object_id,
                    upn=upn if isinstance(upn, str) and upn else None,
                    display_name=display if isinstance(display, str) and display else None,
                )
                outcome, detail = Outcome.FOUND, ""
        return _Answer(found, outcome, detail, self._clock() + self._ttl[outcome])

    def _fresh(self, key: str) -> _Answer | None:
        answer = self._cache.get(key)
        if answer is None:
            return None
        if self._clock() >= answer.until:
            del self._cache[key]
            return None
        return answer

    def _remember(self, key: str, answer: _Answer) -> None:
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
