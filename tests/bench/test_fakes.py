"""The benchmark's instruments: the recording connector's documented Teams limits and its timing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tests.support.connector import RecordingConnector

CHANNEL = "19:incident-response@thread.tacv2"


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def make_connector(ticks: Ticks) -> AsyncIterator[Callable[..., RecordingConnector]]:
    started: list[RecordingConnector] = []

    def make(**options: object) -> RecordingConnector:
        connector = RecordingConnector(documented_limits=True, clock=ticks, **options)  # type: ignore[arg-type]
        started.append(connector)
        return connector

    yield make
    for connector in started:
        await connector.stop()


async def _send(http: aiohttp.ClientSession, connector: RecordingConnector, conversation: str) -> int:
    url = f"{connector.service_url}v3/conversations/{conversation}/activities"
    async with http.post(url, json={"type": "message", "text": "hello"}) as answer:
        return answer.status


async def _update(http: aiohttp.ClientSession, connector: RecordingConnector, conversation: str) -> int:
    url = f"{connector.service_url}v3/conversations/{conversation}/activities/root"
    async with http.put(url, json={"type": "message", "text": "card"}) as answer:
        return answer.status


async def _create(http: aiohttp.ClientSession, connector: RecordingConnector) -> int:
    body = {"isGroup": True, "channelData": {"channel": {"id": CHANNEL}}, "activity": {"type": "message"}}
    async with http.post(f"{connector.service_url}v3/conversations", json=body) as answer:
        return answer.status


async def test_read_as_documented_every_thread_of_a_channel_shares_its_limits(
    make_connector: Callable[..., RecordingConnector], http: aiohttp.ClientSession
) -> None:
    connector = make_connector()
    await connector.start()
    threads = [f"{CHANNEL};messageid={n}" for n in range(8)]
    statuses = [await _send(http, connector, thread) for thread in threads[:4]]
    statuses += [await _update(http, connector, thread) for thread in threads[4:]]
    # Seven operations in one second per channel; the eighth, in yet another thread, is refused.
    assert statuses == [200] * 7 + [429]
    # Creating a conversation is a scenario of its own, with its own seven.
    assert [await _create(http, connector) for _ in range(8)] == [200] * 7 + [429]
    assert connector.throttled == 2


async def test_each_conversation_id_can_be_its_own_thread(
    make_connector: Callable[..., RecordingConnector], http: aiohttp.ClientSession
) -> None:
    connector = make_connector(thread_scope="conversation")
    await connector.start()
    statuses = [await _send(http, connector, f"{CHANNEL};messageid={n}") for n in range(8)]
    assert statuses == [200] * 8
    assert [await _send(http, connector, f"{CHANNEL};messageid=0") for _ in range(7)] == [200] * 6 + [429]


async def test_the_hour_limit_binds_in_a_personal_chat_only(
    make_connector: Callable[..., RecordingConnector], http: aiohttp.ClientSession, ticks: Ticks
) -> None:
    connector = make_connector()
    await connector.start()
    for _ in range(1800):  # two a second, within every short window: 1,800 in 15 minutes
        assert await _send(http, connector, "a:personal-chat") == 200
        assert await _send(http, connector, CHANNEL) == 200
        ticks.now += 0.5
    assert await _send(http, connector, "a:personal-chat") == 429
    assert await _send(http, connector, CHANNEL) == 200


async def test_fifty_calls_a_second_across_the_tenant(
    make_connector: Callable[..., RecordingConnector], http: aiohttp.ClientSession
) -> None:
    connector = make_connector()
    await connector.start()
    statuses = [await _send(http, connector, f"19:channel-{n}@thread.tacv2") for n in range(51)]
    assert statuses == [200] * 50 + [429]


async def test_the_connector_times_every_exchange(http: aiohttp.ClientSession) -> None:
    connector = RecordingConnector()
    await connector.start()
    try:
        assert await _send(http, connector, f"{CHANNEL};messageid=1") == 200
        assert await _update(http, connector, f"{CHANNEL};messageid=1") == 200
    finally:
        await connector.stop()
    send, update = connector.exchanges
    assert (send.kind, update.kind) == ("send", "update")
    assert send.conversation_id == f"{CHANNEL};messageid=1"
    assert 0 < send.arrived <= send.answered <= update.arrived <= update.answered
    assert connector.throttled == 0, "no limits unless asked for"
