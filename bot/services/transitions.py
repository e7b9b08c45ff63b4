"""Applying a domain event to a request inside the store's compare-and-swap.

Owns :class:`Transitions`: the one place a request changes state. Whoever must act once on a
change (audit it, announce it, run it) learns from :meth:`Transitions.apply` whether its event
is the one written. Also owns the blast-radius count (destructive actions in the past hour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.domain.approval import Event, Refused, Start, decide
from bot.domain.models import ActionRequest, RequestState, ResponseAction
from bot.domain.policy import Policy
from bot.store.base import Store

RAN_STATES = (RequestState.EXECUTING, RequestState.SUCCEEDED, RequestState.FAILED)
BLAST_RADIUS_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Transition:
    """What applying one event to a request did, learnt from the compare-and-swap itself.

    ``request`` is the request as stored afterwards. ``won`` is true when this call's event is
    the one written: whoever must act once on a change (audit it, announce it, run it) acts
    only when it won. Otherwise ``refusal`` says why the event did not apply.
    """

    request: ActionRequest
    won: bool
    refusal: str = ""


class Transitions:
    """Request state changes decided on the stored value at the moment of the write."""

    def __init__(self, store: Store, policy: Policy, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock

    async def apply(self, request_id: str, event: Event) -> Transition:
        """Apply ``event`` to the request inside the store's compare-and-swap; say who won.

        The decision is made on the stored value at the moment of the write, never on a read
        made before it: of two replicas handling the same click, sweep or job, exactly one
        gets ``won`` and goes on to audit, announce or run what follows. A :class:`Start` is
        counted against the blast radius and claimed in one store transaction, so the limit
        holds however many replicas start requests at once.
        """
        now = self._clock()

        def apply(current: ActionRequest) -> ActionRequest | Refused:
            return decide(current, event, self._policy, now)

        def start(current: ActionRequest, started_last_hour: int) -> ActionRequest | Refused:
            assert isinstance(event, Start)
            counted = replace(event, destructive_last_hour=started_last_hour)
            return decide(current, counted, self._policy, now)

        if isinstance(event, Start):
            stored, outcome = await self._store.start_request(
                request_id, start, counted=self._policy.destructive_actions, since=now - BLAST_RADIUS_WINDOW
            )
        else:
            stored, outcome = await self._store.swap_request(request_id, apply)
        if isinstance(outcome, Refused):
            return Transition(stored, won=False, refusal=outcome.reason)
        return Transition(stored, won=True)

    async def destructive_last_hour(self, action: ResponseAction) -> int:
        """Destructive actions started in the past hour: the early check when a request is asked
        for (the binding one is made when it starts, in :meth:`apply`)."""
        if action not in self._policy.destructive_actions:
            return 0
        since = self._clock() - BLAST_RADIUS_WINDOW
        return await self._store.count_started_since(self._policy.destructive_actions, since)
