"""Outbound pacing toward Microsoft Teams: every Bot Connector call waits here for its slot.

Teams limits one bot per thread (conversation id) to 7 sends in any 1 s, 8 in any 2 s, 60 in any
30 s and 1800 in any hour, and one app per tenant to 50 requests per second
(msteams-platform, bots/how-to/rate-limit). Every limit is a sliding window over exact timestamps,
not a token bucket: a bucket refilled at 7/s lets a burst of 7 follow a burst of 7 within the same
second, which Teams answers with 429s.

A call occupies its windows from the moment it is let through until it has finished, and is then
stamped with its finishing time. Teams counts a call when it arrives, which is somewhere between
those two moments, so a window that is full by our count is at least as full by Teams' count
however long the network takes; a window with room by our count has room at Teams too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

# When a wait is computed down to a rounding error, still wait this long, so that a clock that
# advances by exactly the time slept (a test's) always moves past the boundary.
_MIN_WAIT = 0.001
# How often idle keys (no caller, no timestamp inside any window) are forgotten.
_FORGET_EVERY = 60.0


@dataclass(frozen=True)
class Limit:
    """At most ``calls`` calls in any window of ``seconds`` seconds."""

    calls: int
    seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.seconds <= 0:
            raise ValueError(f"a limit needs calls >= 1 and seconds > 0, not {self.calls}/{self.seconds}s")


# Teams' limits for one bot in one thread; the "all bots 14/1 s" limit cannot bind a single bot.
TEAMS_THREAD_LIMITS: tuple[Limit, ...] = (Limit(7, 1.0), Limit(8, 2.0), Limit(60, 30.0), Limit(1800, 3600.0))
# Teams' limit for one app across a tenant (older documentation says 30).
TEAMS_TENANT_LIMITS: tuple[Limit, ...] = (Limit(50, 1.0),)


class Lanes:
    """One first-in, first-out lane per key: callers for the same key go one at a time, in order.

    ``asyncio.Lock`` hands itself to its waiters in the order they asked, and a newcomer queues
    behind waiters that were already woken; a lane is forgotten as soon as nobody uses it.
    """

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for the caller's turn in ``key``'s lane and hold the lane for the block."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        # Counted before waiting, so a lane with someone queued is never forgotten (which would
        # let a newcomer start a second lane for the same key and overtake the queue).
        lane.users += 1
        try:
            async with lane.lock:
                yield
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]

    def __len__(self) -> int:
        return len(self._lanes)


class _Lane:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Windows:
    """The calls of one key: finishing times of finished calls (oldest first), and calls in flight."""

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.limits = tuple(limits)
        self.horizon = max((limit.seconds for limit in self.limits), default=0.0)
        self.finished: deque[float] = deque()
        self.in_flight = 0

    def wait(self, now: float) -> float | None:
        """Seconds until one more call fits every limit (0.0: now), or None while only a call in
        flight finishing can make room (it will be stamped later, so it never leaves on its own)."""
        longest = 0.0
        for limit in self.limits:
            recent = 0  # finished calls still inside this window (the newest ones)
            for stamp in reversed(self.finished):
                # Written as a sum, like the wait below: "now - seconds" can round the other
                # way and let a call count as inside while its computed wait is 0.
                if stamp + limit.seconds <= now:
                    break
                recent += 1
            must_leave = self.in_flight + recent - limit.calls + 1
            if must_leave <= 0:
                continue
            if must_leave > recent:
                return None
            # Finished calls leave the window oldest first; the one that makes room:
            leaving = self.finished[len(self.finished) - recent + must_leave - 1]
            longest = max(longest, leaving + limit.seconds - now)
        return longest

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, now: float) -> None:
        self.in_flight -= 1
        self.finished.append(now)

    def forget_before(self, now: float) -> None:
        """Drop timestamps no window can see any more."""
        while self.finished and self.finished[0] + self.horizon <= now:
            self.finished.popleft()

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and not self.finished


class Pacer:
    """Lets each Bot Connector call start only when it fits Teams' limits.

    ``key`` is the conversation the call goes to: the thread's conversation id
    (``<channel>;messageid=<root>``) for replies and card updates, the channel id for a new post.
    Each call also counts toward one tenant-wide window. Calls for the same key are let through in
    the order they asked; calls for different keys do not wait for each other except for the
    tenant window. ``clock`` (monotonic seconds) and ``sleep`` are injectable so that tests observe
    the waits instead of waiting; the injected ``sleep`` must advance the injected ``clock``.
    """

    def __init__(
        self,
        *,
        thread_limits: Sequence[Limit] = TEAMS_THREAD_LIMITS,
        tenant_limits: Sequence[Limit] = TEAMS_TENANT_LIMITS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Teams' limits unless told otherwise; empty sequences switch a level of pacing off."""
        self._thread_limits = tuple(thread_limits)
        self._clock = clock
        self._sleep = sleep
        self._tenant = _Windows(tenant_limits)
        self._keys: dict[str, _Windows] = {}
        self._lanes = Lanes()
        # Set (and replaced) whenever a call finishes: wakes callers waiting for calls in flight.
        self._finished = asyncio.Event()
        self._forgotten_at = clock()
        # Called with the seconds each call waited for room (for metrics); see observe().
        self._on_wait: Callable[[float], None] | None = None

    def observe(self, on_wait: Callable[[float], None]) -> None:
        """Call ``on_wait(seconds)`` with how long each admitted call waited for Teams' limits."""
        self._on_wait = on_wait

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Wait until one call to ``key`` fits every limit; the block is that one call.

        The call counts as under way until the block exits (by return or exception), and is then
        stamped with the time it finished.
        """
        asked = self._clock()
        windows = await self._admit(key)
        if self._on_wait is not None:
            self._on_wait(self._clock() - asked)
        try:
            yield
        finally:
            now = self._clock()
            windows.finish(now)
            self._tenant.finish(now)
            self._finished.set()
            self._finished = asyncio.Event()

    async def _admit(self, key: str) -> _Windows:
        async with self._lanes.hold(key):
            while True:
                now = self._clock()
                windows = self._keys.get(key)
                if windows is None:
                    windows = self._keys[key] = _Windows(self._thread_limits)
                own = windows.wait(now)
                tenant = self._tenant.wait(now)
                if own == 0.0 and tenant == 0.0:
                    # No await between the check and the bookkeeping: nobody else can take the room.
                    windows.start()
                    self._tenant.start()
                    self._forget_idle(now)
                    return windows
                if own is None or tenant is None:
                    await self._finished.wait()
                else:
                    await self._sleep(max(own, tenant, _MIN_WAIT))

    def _forget_idle(self, now: float) -> None:
        """Bound memory to the threads active within the longest window."""
        if now - self._forgotten_at < _FORGET_EVERY:
            return
        self._forgotten_at = now
        self._tenant.forget_before(now)
        for key, windows in list(self._keys.items()):
            windows.forget_before(now)
            if windows.idle:
                del self._keys[key]

    @property
    def keys(self) -> int:
        """How many conversations the pacer is tracking (for tests of its memory)."""
        return len(self._keys)
