"""The publishing lease on a card (a case's or a campaign's), taken and kept by compare-and-swap.

Owns :class:`CardLease`: only the replica holding a card's lease posts or updates it, so
replicas never post one card twice or send its updates out of order; claiming a card not yet
posted records the intent to post before anything is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from bot.domain.campaigns import Campaign
from bot.domain.models import Case

L = TypeVar("L", Case, Campaign)
Swap = Callable[[str, Callable[[L], L | None]], Awaitable[tuple[L, Any]]]


class CardLease(Generic[L]):
    """This replica's claims on cards' publishing leases (of cases, or of campaigns)."""

    def __init__(self, swap: Swap[L], clock: Callable[[], datetime], lease: timedelta, replica: str) -> None:
        self._swap: Swap[L] = swap
        self._clock = clock
        self._lease = lease
        self.replica = replica

    async def claim(self, case_id: str) -> L | None:
        """Take the case's publishing lease (compare-and-swap), so replicas never post one card
        twice or send its updates out of order. ``None`` while another replica holds it.

        Claiming a case that has no card records the intent to post (``posting_claims``) in the
        same write, before anything is sent: whoever claims it next knows a post may have landed.
        """
        now = self._clock()

        def claim(current: L) -> L | None:
            held = current.publishing_until is not None and current.publishing_until > now
            if held and current.publishing_by != self.replica:
                return None
            claims = current.posting_claims + 1 if current.card is None else current.posting_claims
            return current.model_copy(
                update={
                    "publishing_by": self.replica,
                    "publishing_until": now + self._lease,
                    "posting_claims": claims,
                }
            )

        _, claimed = await self._swap(case_id, claim)
        return claimed if claimed is not None else None

    async def renew(self, case_id: str) -> bool:
        now = self._clock()

        def renew(current: L) -> L | None:
            if current.publishing_by != self.replica:
                return None  # lost: another replica took the card over
            return current.model_copy(update={"publishing_until": now + self._lease})

        _, renewed = await self._swap(case_id, renew)
        return renewed is not None

    def release(self, *, unsent: bool) -> Callable[[L], L | None]:
        """Give the lease back; ``unsent`` also withdraws the intent to post (nothing reached Teams)."""

        def release(current: L) -> L | None:
            if current.publishing_by != self.replica:
                return None  # taken over meanwhile: the lease is not ours to give back
            claims = max(current.posting_claims - 1, 0) if unsent else current.posting_claims
            return current.model_copy(
                update={"publishing_by": "", "publishing_until": None, "posting_claims": claims}
            )

        return release
