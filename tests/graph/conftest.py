"""Fixtures for the Graph client tests: the real client, msal and httpx against the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from bot.graph import GraphClient, TokenProvider
from devtools.sandbox import SandboxTenant
from tests.support.graph_fixtures import running_demo_tenant, sandbox_graph, sandbox_http, sandbox_tokens

from .helpers import RecordingSleep


@pytest_asyncio.fixture
async def tenant() -> AsyncIterator[SandboxTenant]:
    """The demo tenant; every test must end without contract violations."""
    async with running_demo_tenant() as sandbox:
        yield sandbox


@pytest_asyncio.fixture
async def tokens(tenant: SandboxTenant) -> AsyncIterator[TokenProvider]:
    """msal, for real, with the client secret, over HTTPS to the sandbox authority."""
    async with sandbox_tokens(tenant) as provider:
        yield provider


@pytest_asyncio.fixture
async def http(tenant: SandboxTenant) -> AsyncIterator[httpx.AsyncClient]:
    """The process-wide httpx client as production builds it."""
    async with sandbox_http(tenant) as client:
        yield client


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def graph(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider, sleeps: RecordingSleep
) -> GraphClient:
    """The Graph client with recorded (not real) waits and a seeded jitter."""
    return sandbox_graph(tenant, http, tokens, sleeps)
