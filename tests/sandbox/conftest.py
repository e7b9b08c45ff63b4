"""Fixtures for the sandbox tenant's own tests: a started tenant and a raw HTTPS client."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from devtools.sandbox import SandboxTenant
from tests.support.graph_fixtures import running_demo_tenant

from .helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def tenant(clock: Clock) -> AsyncIterator[SandboxTenant]:
    """The demo tenant; every test must end without contract violations."""
    async with running_demo_tenant(clock=clock) as sandbox:
        yield sandbox


@pytest_asyncio.fixture
async def anonymous(tenant: SandboxTenant) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTPS client trusting the sandbox CA, without a token."""
    context = ssl.create_default_context(cafile=str(tenant.ca_pem_path))
    async with httpx.AsyncClient(base_url=tenant.authority_host, verify=context, trust_env=False) as client:
        yield client


@pytest_asyncio.fixture
async def graph(tenant: SandboxTenant, anonymous: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same client with a bearer token from the sandbox's token endpoint."""
    answer = await anonymous.post(
        f"/{tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    answer.raise_for_status()
    anonymous.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return anonymous
