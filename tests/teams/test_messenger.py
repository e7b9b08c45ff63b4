"""The messenger against a Bot Connector that throttles and fails like Teams: every send lands
exactly once and in order, or the caller gets a TeamsError that says why."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from bot.config.settings import Settings
from bot.domain.models import CardRef, ChannelRef
from bot.errors import TeamsError, TeamsOutcomeUnknown, TeamsThrottled, TeamsUnavailable
from bot.teams.messenger import RetryPolicy, TeamsMessenger
from bot.teams_agents.messenger import AgentsMessenger
from tests.conftest import Clock
from tests.support.connector import DROP, ConnectorCall, RecordingConnector
from tests.support.harness import BotHarness, install_activity
from tests.support.timing import VirtualTime

Make = Callable[..., TeamsMessenger | AgentsMessenger]


def card(label: str) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "TextBlock", "text": label}],
    }


def landed(connector: RecordingConnector, ref: CardRef) -> list[tuple[str, str]]:
    """What arrived in one thread, in order: (kind, text)."""
    thread = ref.conversation_id
    return [(c.kind, c.text) for c in connector.calls if c.conversation_id == thread and c.kind != "create"]


async def burst(
    messenger: TeamsMessenger | AgentsMessenger, channel: ChannelRef, ref: CardRef, n: int
) -> list[tuple[str, str]]:
    """Fire ``n`` replies with a card update after every third, all at once; return what was meant."""
    meant: list[tuple[str, str]] = []
    sends: list[Awaitable[object]] = []
    for i in range(n):
        text = f"{ref.activity_id} reply {i}"
        meant.append(("send", text))
        sends.append(messenger.reply_in_thread(channel, ref, text))
        if i % 3 == 2:
            label = f"{ref.activity_id} card v{i // 3}"
            meant.append(("update", label))
            sends.append(messenger.update_card(channel, ref, card(label)))
    await asyncio.gather(*sends)
    return meant


async def test_paced_bursts_land_once_in_order_without_a_single_429(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector, virtual: VirtualTime
) -> None:
    messenger = make_messenger()
    refs = await asyncio.gather(*(messenger.post_card(channel, card(f"case {i}")) for i in range(3)))
    started = virtual.monotonic()
    meant = await asyncio.gather(*(burst(messenger, channel, ref, 12) for ref in refs))
    elapsed = virtual.monotonic() - started

    assert limited.throttled == 0, "the pacer kept every call inside the windows"
    for ref, expected in zip(refs, meant, strict=True):
        assert landed(limited, ref) == expected
    assert len(limited.calls) == len(limited.answered) == 3 + 3 * 16, "no call was sent twice"
    # 16 calls per thread, 12 per second: the 13th of each thread waited for the sustained
    # window, so the pacer did hold calls back (on virtual time a call takes no time, and no
    # retry waited: every second that passed is a wait the pacer asked for).
    assert 1.0 <= elapsed < 3.0


async def test_without_pacing_the_429s_are_waited_out_and_nothing_is_lost(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector
) -> None:
    messenger = make_messenger(paced=False)
    ref = await messenger.post_card(channel, card("case"))
    meant = await burst(messenger, channel, ref, 12)

    assert limited.throttled > 0, "unpaced, the burst ran into the limits"
    assert landed(limited, ref) == meant
    statuses = [status for kind, _, status in limited.answered if kind != "create"]
    assert statuses.count(429) == limited.throttled
    assert statuses.count(200) == len(meant)
    # Retry-After was honoured: with one thread, a 429 is always followed by a call that got through.
    assert all(not (first == second == 429) for first, second in itertools.pairwise(statuses))


async def test_many_threads_unpaced_still_land_everything(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector
) -> None:
    # Three threads contend for the tenant window: a retry can lose its slot to another
    # thread, so allow more attempts than the default.
    messenger = make_messenger(paced=False, retry=RetryPolicy(attempts=30, backoff_base=0.01))
    refs = await asyncio.gather(*(messenger.post_card(channel, card(f"case {i}")) for i in range(3)))
    meant = await asyncio.gather(*(burst(messenger, channel, ref, 6) for ref in refs))
    assert limited.throttled > 0
    for ref, expected in zip(refs, meant, strict=True):
        assert landed(limited, ref) == expected


@pytest.mark.parametrize("status", [412, 502, 503, 504, DROP])
async def test_transient_failures_of_replies_and_updates_are_retried(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector, status: int
) -> None:
    messenger = make_messenger()
    ref = await messenger.post_card(channel, card("case"))
    limited.fail_next("send", status, times=2)
    limited.fail_next("update", status)
    await messenger.reply_in_thread(channel, ref, "first")
    await messenger.update_card(channel, ref, card("v2"))
    await messenger.reply_in_thread(channel, ref, "second")

    assert landed(limited, ref) == [("send", "first"), ("update", "v2"), ("send", "second")]
    assert limited.failed == 3
    assert [s for k, _, s in limited.answered if k != "create"] == [status, status, 200, status, 200, 200]


@pytest.mark.parametrize("status", [412, 429, 503])
async def test_a_new_post_is_retried_when_teams_says_it_did_nothing(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector, status: int
) -> None:
    messenger = make_messenger()
    limited.fail_next("create", status, times=2, retry_after="0.01" if status == 429 else None)
    ref = await messenger.post_card(channel, card("case"))
    posts = limited.of_kind("create")
    assert len(posts) == 1 and posts[0].activity_id == ref.activity_id
    assert [s for _, _, s in limited.answered] == [status, status, 200]


@pytest.mark.parametrize("status", [502, 504, 500, DROP])
async def test_a_new_post_that_may_have_landed_is_not_sent_again(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector, status: int
) -> None:
    messenger = make_messenger()
    limited.fail_next("create", status)
    with pytest.raises(TeamsOutcomeUnknown, match="not sent again") as caught:
        await messenger.post_card(channel, card("case"))
    assert caught.value.status == status
    assert caught.value.attempts == 1
    assert caught.value.conversation_id == channel.channel_id
    assert len(limited.answered) == 1


async def test_a_refusal_is_raised_at_once_with_teams_own_words(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector
) -> None:
    messenger = make_messenger()
    ref = await messenger.post_card(channel, card("case"))
    limited.fail_next("send", 403)
    with pytest.raises(TeamsError) as caught:
        await messenger.reply_in_thread(channel, ref, "hello")
    error = caught.value
    assert type(error) is TeamsError
    assert (error.status, error.code, error.attempts) == (403, "BotNotInConversationRoster", 1)
    assert error.conversation_id == ref.conversation_id
    assert "not part of the conversation roster" in error.message
    assert landed(limited, ref) == []


async def test_an_update_refused_inside_the_turn_is_not_swallowed(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector
) -> None:
    # CloudAdapter hands a proactive callback's exception to on_turn_error, which only logs it.
    messenger = make_messenger()
    ref = await messenger.post_card(channel, card("case"))
    limited.fail_next("update", 404)
    with pytest.raises(TeamsError, match="HTTP 404"):
        await messenger.update_card(channel, ref, card("v2"))


async def test_retries_are_capped(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector
) -> None:
    messenger = make_messenger(retry=RetryPolicy(attempts=3, backoff_base=0.01))
    ref = await messenger.post_card(channel, card("case"))
    limited.fail_next("update", 503, times=10)
    with pytest.raises(TeamsUnavailable, match="after 3 attempts") as unavailable:
        await messenger.update_card(channel, ref, card("v2"))
    assert unavailable.value.attempts == 3
    limited.fail_next("send", 429, times=10, retry_after="0")
    with pytest.raises(TeamsThrottled, match="after 3 attempts"):
        await messenger.reply_in_thread(channel, ref, "hello")
    # Each attempt was exactly one request: the transport's own retries are off.
    assert [s for k, _, s in limited.answered if k != "create"][:6] == [503] * 3 + [429] * 3


async def test_a_retry_after_too_long_to_wait_gives_up_at_once(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector, virtual: VirtualTime
) -> None:
    waits = virtual.recorder()
    messenger = make_messenger(retry_waits=waits)
    ref = await messenger.post_card(channel, card("case"))
    limited.fail_next("send", 429, retry_after="120")
    with pytest.raises(TeamsThrottled, match="wait 120 s") as caught:
        await messenger.reply_in_thread(channel, ref, "hello")
    assert waits.calls == []
    assert caught.value.attempts == 1


async def test_retry_after_as_an_http_date(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector, virtual: VirtualTime
) -> None:
    waits = virtual.recorder()
    messenger = make_messenger(retry_waits=waits)
    ref = await messenger.post_card(channel, card("case"))
    soon = format_datetime(virtual.utc() + timedelta(seconds=1), usegmt=True)
    limited.fail_next("update", 429, retry_after=soon)
    await messenger.update_card(channel, ref, card("v2"))
    assert len(waits.calls) == 1
    assert 0.0 < waits.calls[0] < 2.5  # waited for the date (whole seconds)
    assert landed(limited, ref) == [("update", "v2")]


async def test_a_429_does_not_let_the_next_reply_overtake(
    make_messenger: Make, channel: ChannelRef, limited: RecordingConnector
) -> None:
    messenger = make_messenger()
    ref = await messenger.post_card(channel, card("case"))
    limited.fail_next("send", 429, retry_after="0.2")
    await asyncio.gather(*(messenger.reply_in_thread(channel, ref, f"reply {i}") for i in range(5)))
    assert landed(limited, ref) == [("send", f"reply {i}") for i in range(5)]


async def test_no_connection_is_retried_then_reported(
    make_messenger: Make, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 9: every attempt fails before a byte is sent, so even the
    # (not idempotent) new post may be tried again.
    messenger = make_messenger(retry=RetryPolicy(attempts=3, backoff_base=0.01))
    nowhere = ChannelRef(channel_id="19:gone@thread.tacv2", service_url="http://127.0.0.1:9/")
    with caplog.at_level(logging.DEBUG, logger="urllib3"):
        with pytest.raises(TeamsUnavailable, match="Connection refused") as caught:
            await messenger.post_card(nowhere, card("case"))
        assert (caught.value.status, caught.value.attempts) == (0, 3)
        with pytest.raises(TeamsUnavailable):
            await messenger.reply_in_thread(
                nowhere, CardRef(conversation_id="19:gone", activity_id="1"), "hi"
            )
    # urllib3 logs every retry it makes itself ("Incremented Retry", "Retrying (...) after
    # connection broken"); the messenger's own attempts are its warnings, one per failure.
    transport_retries = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert [m for m in transport_retries if "Retry" in m] == [], (
        "no hidden transport retries with their own backoff"
    )
    assert [r.name for r in caplog.records if "Connection refused" in r.getMessage()], (
        "the failures were logged"
    )


# -- the whole app, with Teams' real limits on both sides ------------------------------------------


@pytest.fixture
async def connector() -> AsyncIterator[RecordingConnector]:
    """Overrides the suite's connector for the harness test below: Teams' real limits."""
    recorder = RecordingConnector(emulate_limits=True)
    await recorder.start()
    yield recorder
    await recorder.stop()


async def test_the_app_posts_its_cards_within_teams_limits(
    bot: BotHarness, connector: RecordingConnector, clock: Clock
) -> None:
    status, _ = await bot.post(install_activity(connector.service_url))
    assert status in (200, 201)
    await bot.service.drain()
    assert await bot.poller.poll_once() == 3
    await bot.service.drain()
    posts: list[ConnectorCall] = connector.of_kind("create")
    assert len(posts) == 3
    assert connector.throttled == 0
