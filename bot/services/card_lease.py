"""The publishing lease on a case's card, taken and kept by compare-and-swap.

Owns :class:`CardLease`: only the replica holding a case's lease posts or updates its card, so
replicas never post one card twice or send its updates out of order; claiming a case without a
card records the intent to post before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bot.domain.models import Case
from bot.store.base import Store


class CardLease:
    """This replica's claims on cards' publishing leases."""

    def __init__(self, store: Store, clock: Callable[[], datetime], lease: timedelta, replica: str) -> None:
        self._store = store
        self._clock = clock
        self._lease = lease
        self.replica = replica

    async def claim(self, case_id: str) -> Case | None:
        """Take the case's publishing lease (compare-and-swap), so replicas never post one card
        twice or send its updates out of order. ``None`` while another replica holds it.

        Claiming a case that has no card records the intent to post (``posting_claims``) in the
        same write, before anything is sent: whoever claims it next knows a post may have landed.
        """
        now = self._clock()

        def claim(current: Case) -> Case | None:
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

        _, claimed = await self._store.swap_case(case_id, claim)
        return claimed

    async def renew(self, case_id: str) -> bool:
        now = self._clock()

        def renew(current: Case) -> Case | None:
            if current.publishing_by != self.replica:
                return None  # lost: another replica took the card over
            return current.model_copy(update={"publishing_until": now + self._lease})

        _, renewed = await self._store.swap_case(case_id, renew)
        return renewed is not None

    def release(self, *, unsent: bool) -> Callable[[Case], Case | None]:
        """Give the lease back; ``unsent`` also withdraws the intent to post (nothing reached Teams)."""

        def release(current: Case) -> Case | None:
            if current.publishing_by != self.replica:
                return None  # taken over meanwhile: the lease is not ours to give back
            claims = max(current.posting_claims - 1, 0) if unsent else current.posting_claims
            return current.model_copy(
                update={"publishing_by": "", "publishing_until": None, "posting_claims": claims}
            )

        return release
