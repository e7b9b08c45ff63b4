"""Fixtures for the Graph client tests: the real client, msal and httpx against the sandbox."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from bot.graph import GraphClient, TokenProvider, build_http_client
from bot.sandbox import DEMO_SCENARIO, SandboxTenant

from .helpers import RecordingSleep


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
async def tokens(tenant: SandboxTenant) -> AsyncIterator[TokenProvider]:
    """msal, for real, with the client secret, over HTTPS to the sandbox authority."""
    provider = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        client_secret=tenant.client_secret,
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    yield provider
    await provider.aclose()


@pytest_asyncio.fixture
async def http(tenant: SandboxTenant) -> AsyncIterator[httpx.AsyncClient]:
    """The process-wide httpx client as production builds it."""
    client = build_http_client(ca_bundle=str(tenant.ca_pem_path), timeout=5.0)
    yield client
    await client.aclose()


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def graph(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider, sleeps: RecordingSleep
) -> GraphClient:
    """The Graph client with recorded (not real) waits and a seeded jitter."""
    return GraphClient(http, tokens, tenant.graph_base_url, sleep=sleeps, rng=random.Random(7))
