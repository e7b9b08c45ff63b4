"""The pacer on a fake clock: Teams' windows are never exceeded, and nobody waits for nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.teams.pacing import TEAMS_THREAD_LIMITS, Lanes, Limit, Pacer


class FakeTime:
    """A monotonic clock that only the pacer's sleeps move.

    A sleep never ends early and may end late (when another sleeper has moved the clock further),
    which is all ``asyncio.sleep`` promises too.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


@dataclass
class Sent:
    """One call through the pacer: its key, when it was let through and when it finished."""

    key: str
    granted: float
    finished: float


def pacer(
    time: FakeTime, thread: Sequence[Limit] = TEAMS_THREAD_LIMITS, tenant: Sequence[Limit] = ()
) -> Pacer:
    return Pacer(thread_limits=thread, tenant_limits=tenant, clock=time.clock, sleep=time.sleep)


async def send(p: Pacer, time: FakeTime, key: str, log: list[Sent], duration: float = 0.0) -> None:
    async with p.slot(key):
        granted = time.now
        if duration:
            await time.sleep(duration)
    log.append(Sent(key, granted, time.now))


def busiest_window(times: Sequence[float], seconds: float) -> int:
    """The most calls in any half-open window (t - seconds, t]; it peaks at a window ending on a call.

    "Inside" is ``u + seconds > t``, the form the pacer and the emulating connector use: written
    as ``u > t - seconds`` it can round the other way."""
    return max((sum(1 for u in times if u <= t < u + seconds) for t in times), default=0)


def assert_within(log: Sequence[Sent], thread: Sequence[Limit], tenant: Sequence[Limit]) -> None:
    """Whenever Teams sees a call arrive (any time between grant and finish), no window overflows."""
    for arrival in ("granted", "finished"):
        for key in {s.key for s in log}:
            times = [getattr(s, arrival) for s in log if s.key == key]
            for limit in thread:
                assert busiest_window(times, limit.seconds) <= limit.calls, (arrival, key, limit)
        times = [getattr(s, arrival) for s in log]
        for limit in tenant:
            assert busiest_window(times, limit.seconds) <= limit.calls, (arrival, "tenant", limit)


async def test_seven_go_at_once_then_eight_per_two_seconds() -> None:
    time = FakeTime()
    p = pacer(time)
    log: list[Sent] = []
    for _ in range(16):
        await send(p, time, "19:c;messageid=1", log)
    # 7 per second, but 8 per 2 s: one more in the second second, then the pattern repeats.
    assert [s.granted for s in log] == [0.0] * 7 + [1.0] + [2.0] * 7 + [3.0]


async def test_sixty_per_thirty_seconds_holds_over_a_long_burst() -> None:
    time = FakeTime()
    p = pacer(time)
    log: list[Sent] = []
    for _ in range(130):
        await send(p, time, "19:c;messageid=1", log)
    assert_within(log, TEAMS_THREAD_LIMITS, ())
    assert log[59].granted < 30.0 <= log[60].granted
    assert log[60].granted == log[0].granted + 30.0  # no longer than needed


async def test_threads_do_not_wait_for_each_other_but_share_the_tenant_window() -> None:
    time = FakeTime()
    p = pacer(time, tenant=(Limit(50, 1.0),))
    log: list[Sent] = []
    await asyncio.gather(*(send(p, time, f"19:c;messageid={i}", log) for i in range(60)))
    granted = sorted(s.granted for s in log)
    assert granted == [0.0] * 50 + [1.0] * 10


async def test_a_call_in_flight_holds_its_place_until_it_finishes() -> None:
    time = FakeTime()
    p = pacer(time, thread=(Limit(2, 1.0),))
    log: list[Sent] = []
    # Two slow calls (3 s each) are in flight; the third may only start a second after one ended.
    await asyncio.gather(
        send(p, time, "t", log, duration=3.0),
        send(p, time, "t", log, duration=3.0),
        send(p, time, "t", log),
    )
    third = next(s for s in log if s.finished == s.granted)
    assert third.granted >= 4.0
    assert_within(log, (Limit(2, 1.0),), ())


async def test_first_in_first_out_per_thread() -> None:
    time = FakeTime()
    p = pacer(time, thread=(Limit(2, 1.0),))
    order: list[int] = []

    async def numbered(i: int, key: str) -> None:
        async with p.slot(key):
            if key == "a":
                order.append(i)

    await asyncio.gather(*(numbered(i, "a" if i % 3 else "b") for i in range(30)))
    assert order == [i for i in range(30) if i % 3]


async def test_a_cancelled_waiter_leaves_the_queue_and_frees_nothing_it_did_not_hold() -> None:
    time = FakeTime()
    p = pacer(time, thread=(Limit(1, 1.0),))
    log: list[Sent] = []
    await send(p, time, "t", log)
    waiter = asyncio.create_task(send(p, time, "t", log))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await send(p, time, "t", log)
    assert [s.granted for s in log] == [0.0, 1.0]


async def test_a_failed_call_still_counts() -> None:
    time = FakeTime()
    p = pacer(time, thread=(Limit(1, 1.0),))
    with pytest.raises(RuntimeError):
        async with p.slot("t"):
            raise RuntimeError("Teams said no")
    log: list[Sent] = []
    await send(p, time, "t", log)
    assert log[0].granted == 1.0


async def test_no_limits_means_no_waiting() -> None:
    time = FakeTime()
    p = Pacer(thread_limits=(), tenant_limits=(), clock=time.clock, sleep=time.sleep)
    log: list[Sent] = []
    await asyncio.gather(*(send(p, time, "t", log) for _ in range(100)))
    assert time.slept == [] and len(log) == 100


async def test_idle_threads_are_forgotten() -> None:
    time = FakeTime()
    p = pacer(time)
    log: list[Sent] = []
    for i in range(100):
        await send(p, time, f"19:c;messageid={i}", log)
    assert p.keys == 100
    time.now += 3600 + 61  # past the longest window and the next clean-up
    await send(p, time, "19:c;messageid=new", log)
    assert p.keys == 1


async def test_lanes_keep_order_and_forget_empty_lanes() -> None:
    lanes = Lanes()
    order: list[int] = []

    async def go(i: int) -> None:
        async with lanes.hold("k"):
            await asyncio.sleep(0)
            order.append(i)

    await asyncio.gather(*(go(i) for i in range(20)))
    assert order == list(range(20))
    assert len(lanes) == 0


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="calls >= 1"):
        Limit(0, 1.0)
    with pytest.raises(ValueError, match="seconds > 0"):
        Limit(3, 0.0)


bursts = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # which thread
        st.sampled_from([0.0, 0.0, 0.0, 0.05, 0.3, 1.0, 2.5]),  # when the caller arrives
        st.sampled_from([0.0, 0.0, 0.01, 0.2, 1.5]),  # how long the call takes
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(bursts)
def test_random_bursts_never_exceed_any_window(burst: list[tuple[int, float, float]]) -> None:
    thread = (Limit(3, 1.0), Limit(4, 2.0), Limit(6, 5.0))
    tenant = (Limit(5, 1.0),)

    async def run() -> tuple[list[Sent], dict[str, list[int]], dict[str, list[int]]]:
        time = FakeTime()
        p = pacer(time, thread=thread, tenant=tenant)
        log: list[Sent] = []
        asked: dict[str, list[int]] = {}
        went: dict[str, list[int]] = {}

        async def caller(i: int, key: str, arrival: float, duration: float) -> None:
            await time.sleep(arrival)
            asked.setdefault(key, []).append(i)
            async with p.slot(key):
                went.setdefault(key, []).append(i)
                granted = time.now
                await time.sleep(duration)
            log.append(Sent(key, granted, time.now))

        await asyncio.gather(
            *(caller(i, f"thread-{k}", arrival, d) for i, (k, arrival, d) in enumerate(burst))
        )
        return log, asked, went

    log, asked, went = asyncio.run(run())
    assert len(log) == len(burst)
    assert_within(log, thread, tenant)
    assert went == asked  # first in, first out per thread
