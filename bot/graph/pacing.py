"""Client-side pacing for Graph endpoints with a fixed request rate (Identity Protection)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Pacer:
    """Lets requests start at most once per ``interval`` seconds, in the order they asked.

    Identity Protection allows one request per second per tenant, for all apps together, and
    its 429s carry no ``Retry-After``; waiting before sending is cheaper than being throttled.
    Retries pass through the pacer too: each attempt is a request. ``sleep`` and ``clock`` (a
    monotonic clock in seconds) are injected so that tests observe the waits instead of waiting.
    """

    def __init__(
        self,
        interval: float,
        *,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        """``interval`` seconds between two starts; 0 disables pacing."""
        if interval < 0:
            raise ValueError("a pacing interval cannot be negative")
        self._interval = interval
        self._sleep = sleep
        self._clock = clock
        self._next_start: float | None = None
        # Held while waiting, so that concurrent callers queue for slots one after another.
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when the caller may send its request (at once when its slot has come)."""
        if self._interval == 0:
            return
        async with self._lock:
            now = self._clock()
            if self._next_start is not None and now < self._next_start:
                await self._sleep(self._next_start - now)
                # A test's sleep does not move the clock; the slot it waited for has come anyway.
                now = max(self._clock(), self._next_start)
            self._next_start = now + self._interval
