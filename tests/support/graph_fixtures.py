"""The demo sandbox tenant and the production Graph client against it, for the folders' fixtures.

tests/graph, tests/policy and tests/sandbox each define their own fixtures (and the root conftest
has a ``tenant`` of its own, on another scenario), so this module is not a plugin: it holds the
set-up and tear-down those fixtures share, as async context managers that each conftest wraps in
a fixture of its own, e.g.::

    @pytest_asyncio.fixture
    async def tenant() -> AsyncIterator[SandboxTenant]:
        async with running_demo_tenant() as sandbox:
            yield sandbox
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx

from bot.graph import GraphClient, TokenProvider, build_http_client
from devtools.sandbox import DEMO_SCENARIO, SandboxTenant


@asynccontextmanager
async def running_demo_tenant(clock: Callable[[], datetime] | None = None) -> AsyncIterator[SandboxTenant]:
    """The demo tenant, started (on ``clock`` if given); it must end without contract violations."""
    sandbox = SandboxTenant(DEMO_SCENARIO) if clock is None else SandboxTenant(DEMO_SCENARIO, clock=clock)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()
    # Spelled out: pytest rewrites asserts in conftests and tests, not in this module.
    assert sandbox.violations == [], f"the Graph contract was broken: {sandbox.violations}"


@asynccontextmanager
async def sandbox_tokens(tenant: SandboxTenant) -> AsyncIterator[TokenProvider]:
    """msal, for real, with the client secret, over HTTPS to the sandbox authority."""
    provider = TokenProvider(
        tenant.tenant_id,
        tenant.client_id,
        client_secret=tenant.client_secret,
        authority_host=tenant.authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    try:
        yield provider
    finally:
        await provider.aclose()


@asynccontextmanager
async def sandbox_http(tenant: SandboxTenant) -> AsyncIterator[httpx.AsyncClient]:
    """The process-wide httpx client as production builds it, trusting the sandbox CA."""
    client = build_http_client(ca_bundle=str(tenant.ca_pem_path), timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


def sandbox_graph(
    tenant: SandboxTenant,
    http: httpx.AsyncClient,
    tokens: TokenProvider,
    sleep: Callable[[float], Awaitable[None]],
) -> GraphClient:
    """The production Graph client on the sandbox, waiting through ``sleep``, with a seeded jitter."""
    return GraphClient(http, tokens, tenant.graph_base_url, sleep=sleep, rng=random.Random(7))
