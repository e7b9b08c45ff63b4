"""Fixtures for the policy tests: the demo tenant, the real Graph client and a hand-moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from bot.domain.policy import Policy
from bot.graph import GraphClient
from bot.tenant.directory import Directory
from devtools.sandbox import SandboxTenant
from tests.graph.helpers import RecordingSleep
from tests.support.graph_fixtures import running_demo_tenant, sandbox_graph, sandbox_http, sandbox_tokens


class Clock:
    """The directory's clock, moved by hand to expire its cache."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def tenant() -> AsyncIterator[SandboxTenant]:
    """The demo tenant; every test must end without contract violations."""
    async with running_demo_tenant() as sandbox:
        yield sandbox


@pytest_asyncio.fixture
async def graph(tenant: SandboxTenant) -> AsyncIterator[GraphClient]:
    """The production Graph client (msal + httpx over HTTPS) with recorded, not real, waits."""
    # Closed in reverse: the httpx client first, then msal's session.
    async with sandbox_tokens(tenant) as tokens, sandbox_http(tenant) as http:
        yield sandbox_graph(tenant, http, tokens, RecordingSleep())


@pytest.fixture
def make_directory(graph: GraphClient, clock: Clock) -> Callable[[Policy], Directory]:
    """A Directory over the sandbox for a given policy (cache TTL: five minutes)."""

    def make(policy: Policy) -> Directory:
        return Directory(graph, policy, clock=clock, ttl=timedelta(minutes=5))

    return make
