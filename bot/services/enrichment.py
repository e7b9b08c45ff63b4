"""What a case's card must show before it is first posted, read from Graph and the directory.

Owns :class:`Enricher`: who the identity is in each system, whether it is enabled, at risk,
protected or privileged; and the one-minute snapshot of risky users and risk detections that
serves every card posted within that minute.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bot.domain.models import Case
from bot.graph import GraphClient
from bot.store.base import Store
from bot.tenant.directory import Directory
from bot.tenant.identities import RiskMap, SignalMap, resolve_identity, risk_signal_map, risky_user_map

RISKY_SNAPSHOT_TTL = timedelta(minutes=1)
RISK_SIGNAL_LOOKBACK = timedelta(days=7)


class Enricher:
    """Learns and records the facts a case's first card shows."""

    def __init__(
        self, store: Store, graph: GraphClient, directory: Directory, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._graph = graph
        self._directory = directory
        self._clock = clock
        self._risky: tuple[datetime, RiskMap, SignalMap | None] | None = None

    async def enrich(self, case: Case) -> Case:
        """Learn what the card must show before it is first posted: who the identity is in each
        system, whether it is enabled, at risk, protected or privileged."""
        if not case.resolved:
            # Nothing can be read reliably by a name Entra ID does not resolve; once it does,
            # the case is re-keyed and read then (see settle_unresolved).
            return case
        risky, signals = await self._risk_snapshot()
        identity, account, facts = await resolve_identity(
            self._graph, case.identity, now=self._clock, risky=risky, signals=signals
        )
        target = await self._directory.target_facts(identity)

        def learn(latest: Case) -> Case:
            # An account found disabled (attack disruption, or someone else) is recognised as
            # contained automatically: the card asks to keep it so or to roll it back.
            return latest.model_copy(
                update={
                    "identity": latest.identity.merged(identity),
                    "target_checked": True,
                    "protected": target.protected,
                    "privileged_reason": target.privileged_reason if target.privileged else "",
                    "account": account if latest.account.checked_at is None else latest.account,
                    "facts": facts,
                }
            ).reconciled()

        return await self._store.update_case(case.id, learn)

    async def _risk_snapshot(self) -> tuple[RiskMap | None, SignalMap | None]:
        # One read of risky users and one of recent detections serve every card posted within
        # a minute: Identity Protection allows one request per second tenant-wide.
        now = self._clock()
        if self._risky is None or now - self._risky[0] > RISKY_SNAPSHOT_TTL:
            risky = await risky_user_map(self._graph)
            signals = await risk_signal_map(self._graph, now - RISK_SIGNAL_LOOKBACK)
            if risky is None:
                return None, signals
            self._risky = (now, risky, signals)
        return self._risky[1], self._risky[2]
