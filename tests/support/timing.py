"""Time for tests that must not depend on how fast the machine is.

:class:`VirtualTime` is a monotonic clock and a sleep for code that takes them as parameters
(the Teams pacer and messenger, the service's card coalescing): the code's waits are recorded
and take no real time, and the clock moves only when someone sleeps or the test moves it.
:func:`until` waits for something the code does, with a deadline generous enough for the slowest
machine; it fails the test when the deadline passes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

# Waiting for an event on loopback takes milliseconds; the deadline only bounds a failing test.
GENEROUS = 30.0
# How late a virtual sleep ends (a microsecond: more than float rounding, less than anything timed).
LATE = 1e-6


class VirtualTime:
    """Monotonic seconds (``monotonic``), a wall clock (``utc``) and a ``sleep`` that moves them.

    Sleepers wake in the order their sleeps end (``LATE`` after their time, never before). While
    time *runs* (the default), the earliest pending sleep ends as soon as the event loop gets to
    it: the clock jumps to its end, as if nothing else happened meanwhile, which is what a program
    waiting only on its own timers would see. :meth:`hold` stops that: sleepers then wait until
    :meth:`advance` moves the clock past their end, so the test decides how much time passes
    between two of its steps; :meth:`run` lets time jump again (and wakes whoever still sleeps).
    ``slept`` lists every wait asked for; :meth:`recorder` gives a sleep with a list of its own.
    """

    def __init__(self, *, epoch: datetime = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._epoch = epoch
        self._running = True
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._waking = False

    def monotonic(self) -> float:
        return self.now

    def utc(self) -> datetime:
        """The wall clock: ``epoch`` (whole seconds) plus the virtual seconds gone by."""
        return self._epoch + timedelta(seconds=self.now)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        # A real sleep ends a little after its time, never on it: code that sleeps "whatever is
        # left" until a deadline, computed in floats (or read from a header rounded to the
        # millisecond), must find the deadline passed when it wakes, as it would for real.
        await self._until(self.now + seconds + LATE if seconds > 0 else self.now)

    def recorder(self) -> RecordedSleep:
        """A sleep on this clock that also keeps its own list of waits (e.g. the retries only)."""
        return RecordedSleep(self)

    def hold(self) -> None:
        """From now on the clock moves only through :meth:`advance`."""
        self._running = False

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, waking (in order) every sleeper whose sleep has ended."""
        self.now += seconds
        self._wake_soon()

    def run(self) -> None:
        """Let the clock jump to the end of each sleep again."""
        self._running = True
        self._wake_soon()

    async def _until(self, end: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (end, next(self._order), future))
        self._wake_soon()
        await future

    def _wake_soon(self) -> None:
        # One sleeper per pass of the event loop: whoever starts a shorter sleep meanwhile
        # (another task that was ready to run) is woken first.
        if self._sleepers and not self._waking:
            self._waking = True
            asyncio.get_running_loop().call_soon(self._wake_next)

    def _wake_next(self) -> None:
        self._waking = False
        while self._sleepers and self._sleepers[0][2].done():  # cancelled
            heapq.heappop(self._sleepers)
        if not self._sleepers:
            return
        end, _, future = self._sleepers[0]
        if end > self.now:
            if not self._running:
                return
            self.now = end
        heapq.heappop(self._sleepers)
        future.set_result(None)
        self._wake_soon()


class RecordedSleep:
    """A sleep on a :class:`VirtualTime` that remembers the waits it was asked for in ``calls``."""

    def __init__(self, time: VirtualTime) -> None:
        self.calls: list[float] = []
        self._time = time

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await self._time.sleep(seconds)


async def until(
    condition: Callable[[], object | Awaitable[object]], what: str, *, within: float = GENEROUS
) -> None:
    """Return as soon as ``condition()`` (sync or async) is true; fail the test after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:g} s")
        await asyncio.sleep(0.01)
