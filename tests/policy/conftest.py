"""Fixtures for the policy tests: the demo tenant, the real Graph client and a hand-moved clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from bot.directory import Directory
from bot.domain.policy import Policy
from bot.graph import GraphClient, TokenProvider, build_http_client
from bot.sandbox import DEMO_SCENARIO, SandboxTenant
from tests.graph.helpers import RecordingSleep


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
    sandbox = SandboxTenant(DEMO_SCENARIO)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()
    assert sandbox.violations == []


@pytest_asyncio.fixture
async def graph(tenant: SandboxTenant) -> AsyncIterator[GraphClient]:
    """The production Graph client (msal + httpx over HTTPS) with recorded, not real, waits."""
    tokens = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        client_secret=tenant.client_secret,
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    http: httpx.AsyncClient = build_http_client(ca_bundle=str(tenant.ca_pem_path), timeout=5.0)
    yield GraphClient(http, tokens, tenant.graph_base_url, sleep=RecordingSleep(), rng=random.Random(7))
    await http.aclose()
    await tokens.aclose()


@pytest.fixture
def make_directory(graph: GraphClient, clock: Clock) -> Callable[[Policy], Directory]:
    """A Directory over the sandbox for a given policy (cache TTL: five minutes)."""

    def make(policy: Policy) -> Directory:
        return Directory(graph, policy, clock=clock, ttl=timedelta(minutes=5))

    return make
