"""The doctor against the demo sandbox tenant: real msal, httpx, Graph client and SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from bot.config.settings import ENV_NAMES, Settings, load_settings
from bot.domain.models import ChannelRef
from bot.store.sqlite import SqliteStore
from devtools.sandbox import SandboxTenant
from tests.support.graph_fixtures import running_demo_tenant

CHANNEL_ID = "19:4a95f7d8c1b84d2e9f3a6b7c8d9e0f1a@thread.tacv2"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"
ALEX = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51"  # alex.wilber@contoso.com in the demo tenant
SOC_RESPONDERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c01"
SOC_APPROVERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c02"


@pytest_asyncio.fixture
async def tenant() -> AsyncIterator[SandboxTenant]:
    """The demo tenant; every test must end without contract violations."""
    async with running_demo_tenant() as sandbox:
        yield sandbox


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """Alex responds by name and the SOC groups by membership (so checkMemberGroups is needed)."""
    path = tmp_path / "policy.yaml"
    policy = {
        "responders": {"users": [ALEX], "groups": [SOC_RESPONDERS]},
        "approvers": {"groups": [SOC_APPROVERS]},
        "protected_accounts": ["breakglass@contoso.com"],
    }
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture
def environment(tenant: SandboxTenant, policy_file: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a deployment on the sandbox tenant (the bot's app is the Graph app)."""
    return {
        "MicrosoftAppId": tenant.client_id,
        "MicrosoftAppPassword": tenant.client_secret,
        "MicrosoftAppType": "SingleTenant",
        "MicrosoftAppTenantId": tenant.tenant_id,
        "GRAPH_TENANT_ID": tenant.tenant_id,
        "GRAPH_CLIENT_ID": tenant.client_id,
        "GRAPH_CLIENT_SECRET": tenant.client_secret,
        "GRAPH_AUTHORITY_HOST": tenant.authority_host,
        "GRAPH_BASE_URL": tenant.graph_base_url,
        "GRAPH_CA_BUNDLE": str(tenant.ca_pem_path),
        # The sandbox does not throttle Identity Protection; production keeps one call per second.
        "GRAPH_IDENTITY_PROTECTION_INTERVAL": "0",
        "TEAMS_CHANNEL_ID": CHANNEL_ID,
        "POLICY_FILE": str(policy_file),
        "STORE_URL": f"sqlite:///{tmp_path / 'data' / 'bot.db'}",
        # Required outside sandbox mode: the audit chain's key (from Key Vault in a deployment).
        "AUDIT_HMAC_KEY": "doctor-test audit key of at least thirty-two characters",
    }


_FIELDS = {env: name for name, env in ENV_NAMES.items()}


@pytest.fixture
def make_settings(environment: dict[str, str]) -> Callable[..., Settings]:
    """Settings from ``environment``; keyword arguments (field names) override it."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {_FIELDS[variable]: value for variable, value in environment.items()}
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest_asyncio.fixture
async def registered_channel(make_settings: Callable[..., Settings], tenant: SandboxTenant) -> ChannelRef:
    """The channel as the bot stores it when installed in the incident channel's team."""
    channel = ChannelRef(
        channel_id=CHANNEL_ID,
        service_url=SERVICE_URL,
        tenant_id=tenant.tenant_id,
        team_id=CHANNEL_ID,
        bot_id=tenant.client_id,
        bot_name="Remediation Bot",
    )
    await store_channel(make_settings().sqlite_path, channel)
    return channel


async def store_channel(path: Path, channel: ChannelRef) -> None:
    """Write ``channel`` into the bot's database at ``path`` (creating it)."""
    store = SqliteStore(path)
    try:
        await store.set_channel(channel)
    finally:
        await store.close()
