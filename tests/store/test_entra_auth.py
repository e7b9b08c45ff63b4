"""PostgreSQL with Entra ID authentication: each connection's password is a token of the bot's
managed identity (here the sandbox's identity endpoint); STORE_URL holds no password.

The local server trusts loopback connections, so it cannot refuse a wrong token: what is proven
here is the bot's side (every new connection asks for a token of the database's resource and
hands it over as the password; a missing token is a clear store error, nothing leaks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from bot.config.settings import Settings, load_settings
from bot.errors import ConfigError, StoreError
from bot.store import open_store
from bot.web.app import database_password
from devtools.sandbox import SandboxTenant

pytestmark = pytest.mark.postgres


def entra_settings(tenant: SandboxTenant, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sandbox_mode": True,
        "graph_tenant_id": tenant.tenant_id,
        "graph_client_id": tenant.client_id,
        "graph_managed_identity": "user",
        "graph_authority_host": tenant.authority_host,
        "graph_base_url": tenant.graph_base_url,
        "graph_ca_bundle": str(tenant.ca_pem_path),
        "teams_channel_id": "19:incidents@thread.tacv2",
        "store_url": url,
        "store_entra_auth": True,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def on_azure_host(tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in tenant.managed_identity_environment.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("on_azure_host")
async def test_every_connection_signs_in_with_a_token_of_the_database_resource(
    tenant: SandboxTenant, postgres_url: str
) -> None:
    settings = entra_settings(tenant, postgres_url)
    handed: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        password = database_password(settings, stack)
        assert password is not None

        async def counted() -> str:
            handed.append(await password())
            return handed[-1]

        store = await open_store(postgres_url, password=counted)
        try:
            assert await store.schema_version() > 0
            assert await store.try_lead("poller")  # the leader's own connection signs in too
        finally:
            await store.close()

    # The migration's connection, the pool's and the leader's each asked; msal's cache served
    # one token from one request to the identity endpoint, for the database's resource.
    assert len(handed) >= 3 and set(handed) <= set(tenant.issued_tokens())
    asked = [r.query for r in tenant.requests if r.path == "/msi/token"]
    assert [q["resource"] for q in asked] == ["https://ossrdbms-aad.database.windows.net"]


async def test_no_token_is_a_store_error_that_names_the_database_not_the_token(
    postgres_url: str,
) -> None:
    async def refused() -> str:
        from bot.errors import GraphAuthError

        raise GraphAuthError("No Graph token for app x in tenant y (the user-assigned managed identity): 400")

    with pytest.raises(StoreError) as caught:
        await open_store(postgres_url, password=refused)
    assert "no Entra ID token for the database" in caught.value.message


def test_a_password_in_the_url_or_a_sqlite_store_is_refused(
    tenant: SandboxTenant, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(ConfigError, match="must hold no password"):
        make_settings(store_url="postgresql://bot:hunter2-secret@db.example:5432/bot", store_entra_auth=True)
    with pytest.raises(ConfigError) as caught:
        make_settings(store_entra_auth=True)  # the default store is SQLite
    assert "PostgreSQL STORE_URL only" in str(caught.value)
    assert "hunter2" not in str(caught.value)
