"""The messenger built like the app builds it (real CloudAdapter, authentication off), talking to a
recording Bot Connector that enforces rate limits the way Teams does. Every test of the messenger
runs on both Teams transports: botbuilder's and the Microsoft 365 Agents SDK's.

The limits have Teams' shape (a burst window, a slightly longer one, a sustained one per thread,
and one across the tenant) but are small: 3 per 0.1 s, 4 per 0.2 s and 12 per 1 s per thread,
6 per 0.1 s per tenant. A burst of a few dozen calls then runs into every one of them within a
second or two, which Teams' own numbers (7/1 s, 8/2 s, 60/30 s, 50/1 s) would stretch to minutes.

Those seconds are virtual: the connector's windows, the pacer and the messenger's retry waits all
run on one :class:`~tests.support.timing.VirtualTime`, which only the waits move. A call takes no
time at all, so what gets throttled and how long anything waits is the same on every machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from bot.config.settings import Settings, load_settings
from bot.domain.models import ChannelRef
from bot.teams.adapter import build_adapter
from bot.teams.messenger import RetryPolicy, TeamsMessenger
from bot.teams.pacing import Limit, Pacer
from bot.teams_agents.messenger import AgentsMessenger
from bot.teams_agents.transport import build_adapter as build_agents_adapter
from tests.support.connector import RecordingConnector
from tests.support.harness import BOT_ID, CHANNEL_ID, TENANT_ID
from tests.support.timing import RecordedSleep, VirtualTime

THREAD_LIMITS = (Limit(3, 0.1), Limit(4, 0.2), Limit(12, 1.0))
TENANT_LIMITS = (Limit(6, 0.1),)
FAST_RETRIES = RetryPolicy(attempts=6, backoff_base=0.01, backoff_cap=0.05, longest_retry_after=5.0)


def as_pairs(limits: tuple[Limit, ...]) -> tuple[tuple[int, float], ...]:
    return tuple((limit.calls, limit.seconds) for limit in limits)


@pytest.fixture
def settings() -> Settings:
    """Just enough settings for :func:`build_adapter`; an empty MicrosoftAppId turns auth off."""
    return load_settings(
        sandbox_mode=True,
        microsoft_app_id="",
        graph_tenant_id=TENANT_ID,
        graph_client_id="client",
        graph_client_secret="secret",
        teams_channel_id=CHANNEL_ID,
        responders="someone",
    )


@pytest.fixture
def virtual() -> VirtualTime:
    """The time of the connector's limits, the pacer and the retry waits."""
    return VirtualTime()


@pytest.fixture
async def limited(virtual: VirtualTime) -> AsyncIterator[RecordingConnector]:
    """A Bot Connector answering 429 like Teams (at the small limits above, on virtual time)."""
    recorder = RecordingConnector(
        emulate_limits=True,
        thread_limits=as_pairs(THREAD_LIMITS),
        tenant_limits=as_pairs(TENANT_LIMITS),
        clock=virtual.monotonic,
    )
    await recorder.start()
    yield recorder
    await recorder.stop()


@pytest.fixture
def channel(limited: RecordingConnector) -> ChannelRef:
    return ChannelRef(
        channel_id=CHANNEL_ID,
        service_url=limited.service_url,
        tenant_id=TENANT_ID,
        team_id=CHANNEL_ID,
        bot_id=BOT_ID,
        bot_name="Remediation Bot",
    )


@pytest.fixture(params=["botbuilder", "agents"])
def teams_sdk(request: pytest.FixtureRequest) -> str:
    sdk: str = request.param
    return sdk


@pytest.fixture
def make_messenger(
    settings: Settings, virtual: VirtualTime, teams_sdk: str
) -> Callable[..., TeamsMessenger | AgentsMessenger]:
    """A messenger on the real adapter of each SDK and on virtual time; ``paced=False`` switches
    the pacer off, and ``retry_waits`` records the waits between attempts (the pacer's are not in
    it)."""

    def make(
        *, paced: bool = True, retry: RetryPolicy = FAST_RETRIES, retry_waits: RecordedSleep | None = None
    ) -> TeamsMessenger | AgentsMessenger:
        limits = (THREAD_LIMITS, TENANT_LIMITS) if paced else ((), ())
        pacer = Pacer(
            thread_limits=limits[0], tenant_limits=limits[1], clock=virtual.monotonic, sleep=virtual.sleep
        )
        kind = AgentsMessenger if teams_sdk == "agents" else TeamsMessenger
        adapter = build_agents_adapter(settings) if teams_sdk == "agents" else build_adapter(settings)
        return kind(
            adapter,
            settings.microsoft_app_id,
            pacer=pacer,
            retry=retry,
            sleep=retry_waits or virtual.recorder(),
            now=virtual.utc,
        )

    return make
